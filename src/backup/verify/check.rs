//! Step 4: every database of the replayed cluster checked with contrib's `amcheck`, through the
//! throwaway server, on [`workers`] connections per database (every core but one), the largest
//! relations first:
//! - databases that allow no connections (`template0`) are opened first (the cluster is thrown
//!   away afterwards), so every database is checked;
//! - `CREATE EXTENSION IF NOT EXISTS amcheck` in each;
//! - every heap relation — tables, materialized views, TOAST tables, the system catalogs
//!   among them — with `verify_heapam` (every page read, every tuple's header, every TOAST
//!   pointer followed): that is also "every table can be read";
//! - every valid B-tree index with `bt_index_check`, with `heapallindexed` (every heap tuple
//!   must be found in the index) when its table is at most [`HEAPALLINDEXED_MAX`].
//!
//! A relation whose check reports a problem or fails is damaged: named with its database and
//! the first problem, and the checks go on (every damaged relation is named, not only the
//! first).

use crate::error::{Error, Result};
use crate::postmaster::temp_server::TempServer;

/// Above this heap size an index is checked without `heapallindexed` (which reads the whole
/// table once more for each index, hashing every row): measured on an 869 MB table (5 million
/// rows, 2 cores), `verify_heapam` 380 ms, `bt_index_check` 351 ms, with `heapallindexed`
/// 1851 ms — most of a verify that then took 1.7× the restore alone. The heap is still read
/// whole by `verify_heapam` and the index checked whole; what is left out for such tables is
/// "every row is in its index".
pub const HEAPALLINDEXED_MAX: i64 = 256 << 20;

/// What the checks covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checked {
    pub databases: Vec<String>,
    /// Heap relations checked (tables, materialized views, TOAST tables, catalogs).
    pub tables: u64,
    /// B-tree indexes checked, and how many of them with `heapallindexed`.
    pub indexes: u64,
    pub indexes_heapallindexed: u64,
    /// The databases' size.
    pub bytes: u64,
}

/// One damaged relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub database: String,
    /// `index public.t_pkey`, `table public.t`.
    pub relation: String,
    pub problem: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in database {}: {}",
            self.relation, self.database, self.problem
        )
    }
}

/// The role the checks connect as: the administration role every pgwarden cluster has (the
/// throwaway server trusts its socket).
const ROLE: &str = crate::config::ADMIN_ROLE;

fn sql_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn failed(what: String, e: &postgres::Error) -> Error {
    Error::Backup {
        what: format!("{what}: {}", sql_error(e)),
    }
}

/// Checks every database; the damaged relations, and what was covered.
pub fn check(server: &TempServer) -> Result<(Checked, Vec<Damage>)> {
    let mut admin = server
        .connect(ROLE, "", "postgres")
        .or_else(|_| server.connect(ROLE, "", "template1"))
        .map_err(|e| {
            failed(
                format!("cannot connect to the restored cluster as {ROLE}"),
                &e,
            )
        })?;
    admin
        .batch_execute(
            "DO $$DECLARE d text; BEGIN FOR d IN SELECT datname FROM pg_database WHERE NOT datallowconn LOOP \
             EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS true', d); END LOOP; END$$",
        )
        .map_err(|e| failed("cannot open every database for the checks".into(), &e))?;
    let databases: Vec<String> = admin
        .query("SELECT datname FROM pg_database ORDER BY datname", &[])
        .map_err(|e| failed("cannot list the databases".into(), &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let bytes: i64 = admin
        .query_one(
            "SELECT sum(pg_database_size(oid))::bigint FROM pg_database",
            &[],
        )
        .map_err(|e| failed("cannot read the databases' size".into(), &e))?
        .get(0);
    drop(admin);
    let mut checked = Checked {
        bytes: bytes.max(0) as u64,
        ..Checked::default()
    };
    let mut damage = Vec::new();
    for database in &databases {
        check_database(server, database, &mut checked, &mut damage)?;
        checked.databases.push(database.clone());
    }
    Ok((checked, damage))
}

/// The connections the checks of one database run on at once: one per core (each check is one
/// backend reading one relation, CPU-bound once its pages are cached). The throwaway server
/// runs in an idle session (`SCHED_IDLE`, its session's autogroup at nice 19), so its backends
/// take only what the running server and everything else leave: on 2 cores with nice 19 alone,
/// two check connections had cut the running server's pgbench tps to 0.40×. The largest
/// relations go first, so that where there are several connections a big table's heap check and
/// its index checks overlap.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One relation to check.
enum Item {
    Heap {
        oid: u32,
        name: String,
    },
    Index {
        oid: u32,
        name: String,
        heapallindexed: bool,
    },
}

fn check_database(
    server: &TempServer,
    database: &str,
    checked: &mut Checked,
    damage: &mut Vec<Damage>,
) -> Result<()> {
    let mut c = server
        .connect(ROLE, "", database)
        .map_err(|e| failed(format!("cannot connect to database {database}"), &e))?;
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .map_err(|e| {
            failed(
                format!(
                    "cannot create the amcheck extension in database {database} (the installation's contrib \
                     modules are needed)"
                ),
                &e
            )
        })?;
    let items = list(&mut c, database, checked)?;
    drop(c);
    let found = run_checks(&server.client_config(ROLE, database), database, &items)?;
    damage.extend(found.into_iter().map(|(relation, problem)| Damage {
        database: database.to_string(),
        relation,
        problem,
    }));
    Ok(())
}

/// Every heap and valid B-tree index of the database, in the order they are named in a report
/// (by oid), each with its cost (the bytes its check reads); counted into `checked`.
fn list(
    c: &mut postgres::Client,
    database: &str,
    checked: &mut Checked,
) -> Result<Vec<(Item, i64)>> {
    let heaps = c
        .query(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_relation_size(c.oid) \
             FROM pg_class c JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm', 't') AND a.amname = 'heap' AND c.relpersistence <> 't' \
             ORDER BY c.oid",
            &[],
        )
        .map_err(|e| failed(format!("cannot list the tables of database {database}"), &e))?;
    let indexes = c
        .query(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
             pg_relation_size(i.indrelid), pg_relation_size(c.oid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready \
             ORDER BY c.oid",
            &[],
        )
        .map_err(|e| failed(format!("cannot list the indexes of database {database}"), &e))?;
    let mut items = Vec::with_capacity(heaps.len() + indexes.len());
    for row in heaps {
        checked.tables += 1;
        let (oid, name, bytes) = (row.get(0), row.get(1), row.get(2));
        items.push((Item::Heap { oid, name }, bytes));
    }
    for row in indexes {
        let (oid, name, heap_bytes, index_bytes): (u32, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let heapallindexed = heap_bytes <= HEAPALLINDEXED_MAX;
        checked.indexes += 1;
        checked.indexes_heapallindexed += u64::from(heapallindexed);
        let cost = index_bytes + if heapallindexed { heap_bytes } else { 0 };
        items.push((
            Item::Index {
                oid,
                name,
                heapallindexed,
            },
            cost,
        ));
    }
    Ok(items)
}

/// The checks of `items` on [`workers`] connections, the costliest first; the damaged
/// relations in the order of `items`.
fn run_checks(
    config: &postgres::Config,
    database: &str,
    items: &[(Item, i64)],
) -> Result<Vec<(String, String)>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].1));
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let worker = || -> Result<()> {
        let mut c = config
            .connect(postgres::NoTls)
            .map_err(|e| failed(format!("cannot connect to database {database}"), &e))?;
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Some(problem) = check_item(&mut c, &items[i].0) {
                found.lock().expect("not poisoned").push((i, problem));
            }
        }
        Ok(())
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers().min(items.len()))
            .map(|_| scope.spawn(worker))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a check worker panicked"))
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    let mut found = found.into_inner().expect("not poisoned");
    found.sort_by_key(|(i, _)| *i);
    Ok(found.into_iter().map(|(_, problem)| problem).collect())
}

/// One relation's check: `None` when sound, else the relation and its first problem.
fn check_item(c: &mut postgres::Client, item: &Item) -> Option<(String, String)> {
    match item {
        Item::Heap { oid, name } => {
            let found = c.query(
                "SELECT blkno, offnum, attnum, msg FROM verify_heapam($1::oid::regclass, \
                 on_error_stop => false, check_toast => true, skip => 'none')",
                &[oid],
            );
            match found {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let (blkno, offnum, msg): (i64, Option<i32>, String) =
                        (rows[0].get(0), rows[0].get(1), rows[0].get(3));
                    Some((
                        format!("table {name}"),
                        format!(
                            "{} problem(s), the first in block {blkno}{}: {msg}",
                            rows.len(),
                            offnum.map_or_else(String::new, |o| format!(" item {o}"))
                        ),
                    ))
                }
                Err(e) => Some((format!("table {name}"), sql_error(&e))),
            }
        }
        Item::Index {
            oid,
            name,
            heapallindexed,
        } => c
            .execute(
                "SELECT bt_index_check($1::oid::regclass, $2)",
                &[oid, heapallindexed],
            )
            .err()
            .map(|e| (format!("index {name}"), sql_error(&e))),
    }
}
