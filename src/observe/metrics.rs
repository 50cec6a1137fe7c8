//! `/metrics`: pgwarden's own series and the server's, in the Prometheus text format (0.0.4),
//! encoded by the `prometheus-client` crate from one [`Scrape`] value per request.
//!
//! pgwarden's own:
//! - `pgwarden_state{state}`: 1 for the supervisor's current state, 0 for the others;
//! - `pgwarden_ready`: 1 while `/readyz` answers 200;
//! - `pgwarden_restarts_total`, `pgwarden_failed_starts_total`;
//! - `pgwarden_start_time_seconds`: when this pgwarden started (Unix seconds);
//! - `pgwarden_last_exit_signal` / `pgwarden_last_exit_code`: how the last postmaster ended
//!   (signal 0: it exited by itself; code -1: a signal ended it), once one has ended;
//! - `pgwarden_build_info{version,postgresql_version}`: 1;
//! - once `pgwarden backup` has run: `pgwarden_backup_last_success_timestamp_seconds` and
//!   `pgwarden_backup_last_success_size_bytes` (after a first success), and
//!   `pgwarden_backup_last_attempt_failed` (0/1);
//! - once a backup was verified (`backup verify`, the drill after a scheduled backup):
//!   `pgwarden_backup_verify_success` (0/1), `pgwarden_backup_verify_timestamp_seconds` (when
//!   it finished) and `pgwarden_backup_verify_duration_seconds`;
//! - the endpoint's own connections ([`super::connections`]): `pgwarden_http_connections`
//!   (open now), `pgwarden_http_connections_max` (the cap), and the counters
//!   `pgwarden_http_connections_refused_total` (closed at once over the cap),
//!   `pgwarden_http_timeouts_total{kind="header"|"idle"}`,
//!   `pgwarden_http_requests_too_large_total` and `pgwarden_http_accept_errors_total`.
//!
//! The server's ([`super::pg_stats`]): `pg_up`, and while it is 1, the rest.

use super::Record;
use super::connections::Figures;
use super::pg_stats::{Kind, Sample};
use crate::backup::record::BackupRecord;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The `Content-Type` of the response.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Scrape {
    pub record: Option<Record>,
    pub ready: bool,
    pub server: Arc<Sample>,
    /// The backup record, if a backup was ever attempted.
    pub backup: Option<BackupRecord>,
    /// The last verification's record, if a backup was ever verified.
    pub verify: Option<crate::backup::verify::record::VerifyRecord>,
    /// The endpoint's connections.
    pub endpoint: Option<Figures>,
}

/// The scrape in the Prometheus text format.
pub fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.record.as_ref().map(|r| &r.status);
        let state = status.map_or("installing", |s| s.state.name());
        let mut family = encoder.encode_descriptor(
            "pgwarden_state",
            "The supervisor's state: 1 for the current one",
            None,
            MetricType::Gauge,
        )?;
        for name in crate::instance::status::State::ALL.map(crate::instance::status::State::name) {
            let labels = [("state", name)];
            let value = i64::from(name == state);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            &mut encoder,
            "pgwarden_ready",
            "1 when the server accepts connections (as /readyz)",
            i64::from(self.ready),
        )?;
        counter(
            &mut encoder,
            "pgwarden_restarts",
            "Restarts after exits of a server that had been ready (crashes, hangs)",
            status.map_or(0, |s| u64::from(s.restarts)),
        )?;
        counter(
            &mut encoder,
            "pgwarden_failed_starts",
            "Postmasters that exited before accepting connections",
            self.record.as_ref().map_or(0, |r| r.failed_starts),
        )?;
        if let Some(status) = status {
            gauge(
                &mut encoder,
                "pgwarden_start_time_seconds",
                "When this pgwarden started, in Unix seconds",
                status.started_at_ms as f64 / 1000.0,
            )?;
            if let Some((signal, code)) = status
                .last_exit
                .as_ref()
                .map(|e| (e.signal.map_or(0, i64::from), e.code.map_or(-1, i64::from)))
            {
                gauge(
                    &mut encoder,
                    "pgwarden_last_exit_signal",
                    "The signal that ended the last postmaster (0: it exited by itself)",
                    signal,
                )?;
                gauge(
                    &mut encoder,
                    "pgwarden_last_exit_code",
                    "The last postmaster's exit code (-1: a signal ended it)",
                    code,
                )?;
            }
            let mut info = encoder.encode_descriptor(
                "pgwarden_build_info",
                "pgwarden's version and the PostgreSQL version it runs",
                None,
                MetricType::Gauge,
            )?;
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                ("postgresql_version", status.postgresql_version.as_str()),
            ];
            ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        }

        if let Some(backup) = &self.backup {
            if let Some(success) = &backup.last_success {
                gauge(
                    &mut encoder,
                    "pgwarden_backup_last_success_timestamp_seconds",
                    "When the last successful backup ended, in Unix seconds",
                    success.finished_ms as f64 / 1000.0,
                )?;
                gauge(
                    &mut encoder,
                    "pgwarden_backup_last_success_size_bytes",
                    "Size of the last successful backup's archive",
                    success.size,
                )?;
            }
            gauge(
                &mut encoder,
                "pgwarden_backup_last_attempt_failed",
                "1 when the last backup attempt failed",
                i64::from(backup.last_result != "ok"),
            )?;
        }
        if let Some(verify) = &self.verify {
            gauge(
                &mut encoder,
                "pgwarden_backup_verify_success",
                "1 when the last backup verification (restore, replay, amcheck) found it sound",
                i64::from(verify.ok),
            )?;
            gauge(
                &mut encoder,
                "pgwarden_backup_verify_timestamp_seconds",
                "When the last backup verification finished, in Unix seconds",
                verify.finished_ms as f64 / 1000.0,
            )?;
            gauge(
                &mut encoder,
                "pgwarden_backup_verify_duration_seconds",
                "How long the last backup verification took",
                verify.duration_ms as f64 / 1000.0,
            )?;
        }

        if let Some(endpoint) = &self.endpoint {
            encode_endpoint(&mut encoder, endpoint)?;
        }

        gauge(
            &mut encoder,
            "pg_up",
            "1 when the last query set of the server's statistics succeeded",
            i64::from(self.server.up),
        )?;
        for family in &self.server.families {
            let metric_type = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Untyped => MetricType::Unknown,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            for (labels, value) in &family.series {
                if labels.is_empty() {
                    encode_value(&mut metric, family.kind, *value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, family.kind, *value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_endpoint(
    encoder: &mut DescriptorEncoder,
    figures: &Figures,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "pgwarden_http_connections",
        "Connections open to this HTTP endpoint",
        figures.open as i64,
    )?;
    gauge(
        encoder,
        "pgwarden_http_connections_max",
        "The cap on connections open to this HTTP endpoint",
        figures.cap as i64,
    )?;
    counter(
        encoder,
        "pgwarden_http_connections_refused",
        "Connections closed at once because the cap was reached",
        figures.refused,
    )?;
    let mut timeouts = encoder.encode_descriptor(
        "pgwarden_http_timeouts",
        "Connections closed by a timeout: a request's headers too slow (header), nothing moving (idle)",
        None,
        MetricType::Counter,
    )?;
    for (kind, value) in [
        ("header", figures.header_timeouts),
        ("idle", figures.idle_timeouts),
    ] {
        ConstCounter::new(value).encode(timeouts.encode_family(&[("kind", kind)])?)?;
    }
    counter(
        encoder,
        "pgwarden_http_requests_too_large",
        "Requests refused (431) because their line and headers were too long",
        figures.too_large,
    )?;
    counter(
        encoder,
        "pgwarden_http_accept_errors",
        "Failed accepts (e.g. out of descriptors), each followed by a pause",
        figures.accept_errors,
    )
}

fn encode_value(
    metric: &mut prometheus_client::encoding::MetricEncoder,
    kind: Kind,
    value: f64,
) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => metric.encode_counter::<NoLabelSet, f64, f64>(&value, None),
        Kind::Gauge | Kind::Untyped => metric.encode_gauge(&value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::pg_stats::Family;
    use crate::observe::sample_status;

    #[test]
    fn own_and_server_series_are_encoded_with_their_names() {
        let mut status = sample_status();
        status.restarts = 3;
        status.last_exit = Some(crate::observe::sample_exit());
        let server = Sample {
            up: true,
            families: vec![
                Family {
                    name: "pg_stat_database_xact_commit",
                    help: "Transactions committed",
                    kind: Kind::Untyped,
                    series: vec![(
                        vec![("datid", "5".into()), ("datname", "trader".into())],
                        42.0,
                    )],
                },
                Family {
                    name: "pg_stat_bgwriter_checkpoints_timed",
                    help: "Scheduled checkpoints",
                    kind: Kind::Counter,
                    series: vec![(vec![], 7.0)],
                },
            ],
        };
        let text = encode(Scrape {
            record: Some(Record {
                status,
                failed_starts: 1,
            }),
            ready: true,
            server: Arc::new(server),
            backup: Some(BackupRecord {
                last_result: "ok".into(),
                last_finished_ms: 1_700_000_100_000,
                last_error: None,
                last_success: Some(crate::backup::record::SuccessfulBackup {
                    archive: "/b/x.tar.zst".into(),
                    size: 4096,
                    finished_ms: 1_700_000_099_500,
                    duration_ms: 500,
                    stop_lsn: "0/1".into(),
                }),
            }),
            verify: Some(crate::backup::verify::record::VerifyRecord {
                finished_ms: 1_700_000_200_000,
                backup: "/b/x.tar.zst".into(),
                ok: false,
                duration_ms: 2_500,
                failed_step: Some("check".into()),
                failures: vec!["index public.t_pkey in database app: bad".into()],
                checked: None,
            }),
            endpoint: Some(Figures {
                open: 2,
                cap: 64,
                refused: 5,
                header_timeouts: 3,
                idle_timeouts: 1,
                too_large: 4,
                accept_errors: 0,
            }),
        });
        for line in [
            "pgwarden_state{state=\"ready\"} 1\n",
            "pgwarden_state{state=\"restarting\"} 0\n",
            "pgwarden_ready 1\n",
            "# TYPE pgwarden_restarts_total counter\n",
            "pgwarden_restarts_total 3\n",
            "pgwarden_failed_starts_total 1\n",
            "pgwarden_start_time_seconds 1700000000",
            "pgwarden_last_exit_signal 9",
            "pgwarden_last_exit_code -1",
            "pg_up 1",
            "pgwarden_backup_last_success_timestamp_seconds 1700000099.5\n",
            "pgwarden_backup_last_success_size_bytes 4096\n",
            "pgwarden_backup_last_attempt_failed 0\n",
            "pgwarden_backup_verify_success 0\n",
            "pgwarden_backup_verify_timestamp_seconds 1700000200.0\n",
            "pgwarden_backup_verify_duration_seconds 2.5\n",
            "pgwarden_http_connections 2\n",
            "pgwarden_http_connections_max 64\n",
            "pgwarden_http_connections_refused_total 5\n",
            "pgwarden_http_timeouts_total{kind=\"header\"} 3\n",
            "pgwarden_http_timeouts_total{kind=\"idle\"} 1\n",
            "pgwarden_http_requests_too_large_total 4\n",
            "pgwarden_http_accept_errors_total 0\n",
            "# TYPE pg_stat_database_xact_commit untyped\n",
            "pg_stat_database_xact_commit{datid=\"5\",datname=\"trader\"} 42",
            "pg_stat_bgwriter_checkpoints_timed_total 7",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
