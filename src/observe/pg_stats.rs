//! The server's own statistics, named as postgres_exporter names them (so that its dashboards
//! work), queried as [`ADMIN_ROLE`] over the private Unix socket.
//!
//! One query set is one connection and one simple-query round trip (all statements in one
//! message). The [`Cache`] makes at most one query set per [`MIN_INTERVAL`], however many
//! scrapes arrive: a scrape takes the cache's lock, and finds either a fresh sample or queries
//! the server itself while the others wait for its result. Each query set is bounded by
//! [`TIMEOUT`] (connect included): a stopped or overloaded server gives `pg_up 0` within it,
//! never a hung scrape. A connection per query set, not a kept one: it proves the server still
//! accepts connections (what `pg_up` means to an alert), and no idle session of pgwarden's
//! holds up a smart shutdown.
//!
//! Counters that postgres_exporter exposes without the `_total` suffix
//! (`pg_stat_database_xact_commit`, …) are typed `untyped` here: the Prometheus text encoder
//! names every counter `…_total`, and the name is what dashboards use. Those it names `_total`
//! (`pg_stat_bgwriter_*_total`) are counters.

use crate::config::ADMIN_ROLE;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// At most one query set per this interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long one query set may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The `application_name` of the metrics sessions (in `pg_stat_activity` and the server log).
pub const APPLICATION_NAME: &str = "pgwarden-metrics";

/// Where the server listens on its private socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub socket_dir: PathBuf,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Encoded with the `_total` suffix.
    Counter,
    /// A counter postgres_exporter names without `_total`.
    Untyped,
}

/// One metric family of the server's.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub series: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// One query set's result.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The server answered the whole query set in time.
    pub up: bool,
    pub families: Vec<Family>,
}

/// A value column: the metric it feeds.
struct Column {
    metric: &'static str,
    help: &'static str,
    kind: Kind,
}

const fn gauge(metric: &'static str, help: &'static str) -> Column {
    Column {
        metric,
        help,
        kind: Kind::Gauge,
    }
}

const fn untyped(metric: &'static str, help: &'static str) -> Column {
    Column {
        metric,
        help,
        kind: Kind::Untyped,
    }
}

const fn counter(metric: &'static str, help: &'static str) -> Column {
    Column {
        metric,
        help,
        kind: Kind::Counter,
    }
}

/// One statement: its first `labels.len()` columns are labels, the rest values.
struct Query {
    sql: &'static str,
    labels: &'static [&'static str],
    values: &'static [Column],
}

const QUERIES: &[Query] = &[
    Query {
        sql: "SELECT datid::text, datname, numbackends, xact_commit, xact_rollback, blks_read, \
              blks_hit, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted, \
              conflicts, temp_files, temp_bytes, deadlocks, blk_read_time, blk_write_time \
              FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datname",
        labels: &["datid", "datname"],
        values: &[
            gauge(
                "pg_stat_database_numbackends",
                "Backends connected to this database",
            ),
            untyped(
                "pg_stat_database_xact_commit",
                "Transactions committed in this database",
            ),
            untyped(
                "pg_stat_database_xact_rollback",
                "Transactions rolled back in this database",
            ),
            untyped(
                "pg_stat_database_blks_read",
                "Disk blocks read in this database",
            ),
            untyped(
                "pg_stat_database_blks_hit",
                "Disk blocks found in the buffer cache",
            ),
            untyped("pg_stat_database_tup_returned", "Rows returned by queries"),
            untyped("pg_stat_database_tup_fetched", "Rows fetched by queries"),
            untyped("pg_stat_database_tup_inserted", "Rows inserted"),
            untyped("pg_stat_database_tup_updated", "Rows updated"),
            untyped("pg_stat_database_tup_deleted", "Rows deleted"),
            untyped(
                "pg_stat_database_conflicts",
                "Queries canceled due to conflicts with recovery",
            ),
            untyped(
                "pg_stat_database_temp_files",
                "Temporary files created by queries",
            ),
            untyped(
                "pg_stat_database_temp_bytes",
                "Data written to temporary files by queries",
            ),
            untyped("pg_stat_database_deadlocks", "Deadlocks detected"),
            untyped(
                "pg_stat_database_blk_read_time",
                "Time spent reading data file blocks, in milliseconds",
            ),
            untyped(
                "pg_stat_database_blk_write_time",
                "Time spent writing data file blocks, in milliseconds",
            ),
        ],
    },
    Query {
        sql: "SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY datname",
        labels: &["datname"],
        values: &[gauge(
            "pg_database_size_bytes",
            "Disk space used by the database",
        )],
    },
    // postgres_exporter's query: every state of every database, 0 where none.
    Query {
        sql: "SELECT d.datname, s.state, coalesce(a.count, 0), coalesce(a.max_tx_duration, 0) \
              FROM (VALUES ('active'), ('idle'), ('idle in transaction'), \
                           ('idle in transaction (aborted)'), ('fastpath function call'), \
                           ('disabled')) AS s(state) \
              CROSS JOIN pg_database d \
              LEFT JOIN (SELECT datname, state, count(*) AS count, \
                                max(extract(epoch FROM now() - xact_start))::float8 AS max_tx_duration \
                         FROM pg_stat_activity GROUP BY datname, state) a \
                ON a.state = s.state AND a.datname = d.datname \
              ORDER BY d.datname, s.state",
        labels: &["datname", "state"],
        values: &[
            gauge("pg_stat_activity_count", "Connections in this state"),
            gauge(
                "pg_stat_activity_max_tx_duration",
                "Age of the oldest transaction in this state, in seconds",
            ),
        ],
    },
    Query {
        sql: "SELECT current_setting('max_connections')",
        labels: &[],
        values: &[gauge(
            "pg_settings_max_connections",
            "Server setting max_connections",
        )],
    },
    Query {
        sql: "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, \
              checkpoint_sync_time, buffers_checkpoint, buffers_clean, maxwritten_clean, \
              buffers_backend, buffers_backend_fsync, buffers_alloc, \
              extract(epoch FROM stats_reset) FROM pg_stat_bgwriter",
        labels: &[],
        values: &[
            counter(
                "pg_stat_bgwriter_checkpoints_timed",
                "Scheduled checkpoints performed",
            ),
            counter(
                "pg_stat_bgwriter_checkpoints_req",
                "Requested checkpoints performed",
            ),
            counter(
                "pg_stat_bgwriter_checkpoint_write_time",
                "Time spent writing checkpoint files, in milliseconds",
            ),
            counter(
                "pg_stat_bgwriter_checkpoint_sync_time",
                "Time spent syncing checkpoint files, in milliseconds",
            ),
            counter(
                "pg_stat_bgwriter_buffers_checkpoint",
                "Buffers written during checkpoints",
            ),
            counter(
                "pg_stat_bgwriter_buffers_clean",
                "Buffers written by the background writer",
            ),
            counter(
                "pg_stat_bgwriter_maxwritten_clean",
                "Times the background writer stopped for writing too many buffers",
            ),
            counter(
                "pg_stat_bgwriter_buffers_backend",
                "Buffers written directly by a backend",
            ),
            counter(
                "pg_stat_bgwriter_buffers_backend_fsync",
                "Times a backend had to execute its own fsync",
            ),
            counter("pg_stat_bgwriter_buffers_alloc", "Buffers allocated"),
            counter(
                "pg_stat_bgwriter_stats_reset",
                "When these statistics were last reset, in Unix seconds",
            ),
        ],
    },
    Query {
        sql: "SELECT (SELECT count(*) FROM pg_ls_waldir()), \
                     (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()), \
                     wal_records, wal_bytes FROM pg_stat_wal",
        labels: &[],
        values: &[
            gauge("pg_wal_segments", "WAL segment files in pg_wal"),
            gauge(
                "pg_wal_size_bytes",
                "Size of the WAL segment files in pg_wal",
            ),
            counter("pg_stat_wal_records", "WAL records generated"),
            counter("pg_stat_wal_bytes", "WAL generated, in bytes"),
        ],
    },
];

/// The query set, one simple-query message.
fn batch() -> String {
    QUERIES
        .iter()
        .map(|q| q.sql)
        .collect::<Vec<_>>()
        .join(";\n")
}

/// Runs the query set once (no timeout here).
pub async fn query(target: &Target) -> Result<Sample, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&target.socket_dir)
        .port(target.port)
        .user(ADMIN_ROLE)
        .dbname("postgres")
        .application_name(APPLICATION_NAME);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let messages = client.simple_query(&batch()).await;
    drop(client);
    // The connection ends (Terminate sent) once the client is gone.
    let _ = connection.await;
    Ok(collect(&messages?))
}

/// Maps the statements' rows (in [`QUERIES`] order) to metric families.
fn collect(messages: &[SimpleQueryMessage]) -> Sample {
    let mut families: Vec<Family> = Vec::new();
    let mut statement = 0;
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                let Some(query) = QUERIES.get(statement) else {
                    continue;
                };
                let labels: Vec<(&'static str, String)> = query
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (*name, row.get(i).unwrap_or_default().to_string()))
                    .collect();
                for (i, column) in query.values.iter().enumerate() {
                    let Some(value) = row
                        .get(query.labels.len() + i)
                        .and_then(|v| v.parse::<f64>().ok())
                    else {
                        continue;
                    };
                    let family = match families.iter_mut().position(|f| f.name == column.metric) {
                        Some(at) => &mut families[at],
                        None => {
                            families.push(Family {
                                name: column.metric,
                                help: column.help,
                                kind: column.kind,
                                series: Vec::new(),
                            });
                            families.last_mut().expect("just pushed")
                        }
                    };
                    family.series.push((labels.clone(), value));
                }
            }
            SimpleQueryMessage::CommandComplete(_) => statement += 1,
            _ => {}
        }
    }
    Sample { up: true, families }
}

/// The last sample and when it was taken.
#[derive(Debug, Default)]
struct Cached {
    at: Option<Instant>,
    sample: Arc<Sample>,
}

/// At most one query set per [`MIN_INTERVAL`], each within [`TIMEOUT`].
#[derive(Debug, Default)]
pub struct Cache {
    cached: tokio::sync::Mutex<Cached>,
}

impl Cache {
    /// A sample at most [`MIN_INTERVAL`] old (plus the wait for one in flight).
    pub async fn sample(&self, target: &Target) -> Arc<Sample> {
        let mut cached = self.cached.lock().await;
        if cached.at.is_some_and(|at| at.elapsed() < MIN_INTERVAL) {
            return cached.sample.clone();
        }
        let was_up = cached.sample.up;
        let sample = match tokio::time::timeout(TIMEOUT, query(target)).await {
            Ok(Ok(sample)) => {
                if !was_up && cached.at.is_some() {
                    tracing::info!("metrics: the server answers again");
                }
                sample
            }
            Ok(Err(e)) => {
                if was_up || cached.at.is_none() {
                    tracing::info!("metrics: cannot query the server (pg_up 0): {e}");
                }
                Sample::default()
            }
            Err(_) => {
                if was_up || cached.at.is_none() {
                    tracing::info!(
                        "metrics: the server did not answer within {}s (pg_up 0)",
                        TIMEOUT.as_secs()
                    );
                }
                Sample::default()
            }
        };
        // Stamped when the query set ended: the next one starts at least MIN_INTERVAL later.
        cached.at = Some(Instant::now());
        cached.sample = Arc::new(sample);
        cached.sample.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_has_its_columns_named_once() {
        let mut names: Vec<&str> = QUERIES
            .iter()
            .flat_map(|q| q.values.iter().map(|c| c.metric))
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a metric fed by two columns");
        assert!(names.iter().all(|n| n.starts_with("pg_")));
        assert_eq!(batch().matches(";\n").count(), QUERIES.len() - 1);
    }
}
