//! Collation versions: which databases and collations were recorded under another C library
//! than this system's, which indexes depend on them, and the statements that rebuild those
//! indexes and record the new versions.
//!
//! The problem: an index on a text column stores its keys in the order the collation gave when
//! they were inserted. A cluster made by the `postgres:16` image (Debian 12, glibc 2.36) and
//! served on another glibc may sort some strings differently, so such an index can miss rows
//! or let duplicates past a unique constraint. PostgreSQL records the version it saw —
//! `pg_database.datcollversion` for a database's default collation, `pg_collation.collversion`
//! for the others — and reports today's with `pg_database_collation_actual_version()` and
//! `pg_collation_actual_version()`. Where they differ, the indexes on columns of those
//! collations are rebuilt and the versions then refreshed (PostgreSQL's documented procedure,
//! `ALTER COLLATION`'s "Notes").
//!
//! One survey ([`survey`]) serves both the take-over's warning ([`super::take_over`]) and
//! `pgwarden db reindex-collations` ([`crate::commands::db`]); [`Stale::statements`] is what
//! the command runs, in order: every REINDEX first, the refreshes last, so that a failure half
//! way leaves the versions stale and the next run does the rest.
//!
//! A version recorded as none (a cluster upgraded from before PostgreSQL 15) is not stale:
//! PostgreSQL does not warn about it, and refuses to refresh it ("invalid collation version
//! change"). Not covered: a partial index whose predicate (not its key) compares text, and databases
//! that refuse connections (`template0`: no user indexes; a database made from it copies its
//! recorded version and is found by the next run).

use super::quote_identifier;
use crate::error::{Error, Result};

/// A recorded collation version and this system's (`none` where PostgreSQL reports none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub recorded: String,
    pub actual: String,
}

/// A schema-qualified object: an index or a collation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    pub schema: String,
    pub name: String,
}

impl Qualified {
    /// `"schema"."name"`, each part quoted as an identifier.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.name)
        )
    }
}

/// A non-default collation in use (by a column or an index) whose version is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCollation {
    pub collation: Qualified,
    pub versions: Versions,
}

/// One database with something stale: its default collation, other collations in use, and the
/// indexes whose key columns use any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub database: String,
    /// The default collation's versions, when they differ.
    pub default: Option<Versions>,
    pub collations: Vec<StaleCollation>,
    pub indexes: Vec<Qualified>,
}

/// How the indexes are rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reindex {
    /// `REINDEX INDEX CONCURRENTLY`: the table stays readable and writable meanwhile.
    Concurrently,
    /// `REINDEX INDEX`: faster, but writes to the table (and queries planned on it) wait.
    Locking,
}

/// One statement of the plan and what it acts on, for progress lines and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    /// "index public.t_name_idx", "collation public.de", "database shop".
    pub target: String,
}

impl Stale {
    /// What to run in this database, in order: each REINDEX, then each `ALTER COLLATION …
    /// REFRESH VERSION`, then `ALTER DATABASE … REFRESH COLLATION VERSION`.
    pub fn statements(&self, how: Reindex) -> Vec<Statement> {
        let concurrently = match how {
            Reindex::Concurrently => "CONCURRENTLY ",
            Reindex::Locking => "",
        };
        let reindex = self.indexes.iter().map(|index| Statement {
            sql: format!("REINDEX INDEX {concurrently}{}", index.quoted()),
            target: format!("index {}.{}", index.schema, index.name),
        });
        let collations = self.collations.iter().map(|c| Statement {
            sql: format!("ALTER COLLATION {} REFRESH VERSION", c.collation.quoted()),
            target: format!("collation {}.{}", c.collation.schema, c.collation.name),
        });
        let database = self.default.iter().map(|_| Statement {
            sql: format!(
                "ALTER DATABASE {} REFRESH COLLATION VERSION",
                quote_identifier(&self.database)
            ),
            target: format!("database {}", self.database),
        });
        reindex.chain(collations).chain(database).collect()
    }

    /// What is stale, in one line: "collation version 2.28 recorded, 2.36 here; collation
    /// public.de 2.28 → 2.36".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.default {
            parts.push(format!(
                "default collation version {} recorded, {} here",
                v.recorded, v.actual
            ));
        }
        for c in &self.collations {
            parts.push(format!(
                "collation {}.{} version {} recorded, {} here",
                c.collation.schema, c.collation.name, c.versions.recorded, c.versions.actual
            ));
        }
        parts.join("; ")
    }

    /// The indexes, comma-separated, or "none".
    pub fn index_list(&self) -> String {
        if self.indexes.is_empty() {
            return "none".into();
        }
        self.indexes
            .iter()
            .map(|i| format!("{}.{}", i.schema, i.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The databases (all that allow connections, or only `only`) with a stale collation.
/// `maintenance` is a connection to any database of the instance; `connect` opens one to the
/// named database (collations and indexes are per database).
pub fn survey(
    maintenance: &mut postgres::Client,
    only: Option<&str>,
    mut connect: impl FnMut(&str) -> Result<postgres::Client>,
) -> Result<Vec<Stale>> {
    let rows = maintenance
        .query(
            "SELECT datname, datcollversion, pg_database_collation_actual_version(oid), \
             datcollversion IS NOT NULL AND \
             datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid) \
             FROM pg_database WHERE datallowconn AND ($1::text IS NULL OR datname = $1) \
             ORDER BY datname",
            &[&only],
        )
        .map_err(|e| sql_error("the instance", &e))?;
    if let (Some(name), true) = (only, rows.is_empty()) {
        return Err(Error::Server {
            what: format!(
                "database {name:?} does not exist or does not allow connections\n\
                 help: list the databases with `pgwarden psql -- -l`, or leave out --database \
                 to check them all"
            ),
        });
    }
    let mut stale = Vec::new();
    for row in rows {
        let database: String = row.get(0);
        let default = row.get::<_, bool>(3).then(|| Versions {
            recorded: row
                .get::<_, Option<String>>(1)
                .unwrap_or_else(|| "none".into()),
            actual: row
                .get::<_, Option<String>>(2)
                .unwrap_or_else(|| "none".into()),
        });
        let mut client = connect(&database)?;
        let found = survey_database(&mut client, database, default)
            .map_err(|(database, e)| sql_error(&format!("database {database:?}"), &e))?;
        stale.extend(found);
    }
    Ok(stale)
}

/// In one database: its stale collations in use and the indexes on them (`None`: nothing stale).
fn survey_database(
    client: &mut postgres::Client,
    database: String,
    default: Option<Versions>,
) -> std::result::Result<Option<Stale>, (String, postgres::Error)> {
    // The actual version only of collations in use: that of a collation whose locale this
    // system lacks is an error (CASE evaluates it only where the condition holds).
    let collations = client
        .query(
            "SELECT oid, nspname, collname, recorded, actual FROM ( \
               SELECT c.oid, n.nspname, c.collname, c.collversion AS recorded, \
                 CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a \
                                   WHERE a.attcollation = c.oid AND NOT a.attisdropped) \
                 THEN pg_collation_actual_version(c.oid) END AS actual, \
                 EXISTS (SELECT 1 FROM pg_attribute a \
                         WHERE a.attcollation = c.oid AND NOT a.attisdropped) AS in_use \
               FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace \
               WHERE c.oid NOT IN ('pg_catalog.default'::regcollation, \
                                   'pg_catalog.\"C\"'::regcollation, \
                                   'pg_catalog.\"POSIX\"'::regcollation)) s \
             WHERE in_use AND recorded IS NOT NULL AND recorded IS DISTINCT FROM actual \
             ORDER BY nspname, collname",
            &[],
        )
        .map_err(|e| (database.clone(), e))?;
    let mut oids: Vec<u32> = collations.iter().map(|r| r.get(0)).collect();
    if default.is_some() {
        oids.push(100); // pg_catalog.default
    }
    if oids.is_empty() {
        return Ok(None);
    }
    let collations = collations
        .iter()
        .map(|r| StaleCollation {
            collation: Qualified {
                schema: r.get(1),
                name: r.get(2),
            },
            versions: Versions {
                recorded: r
                    .get::<_, Option<String>>(3)
                    .unwrap_or_else(|| "none".into()),
                actual: r
                    .get::<_, Option<String>>(4)
                    .unwrap_or_else(|| "none".into()),
            },
        })
        .collect();
    let indexes = indexes_on(client, &oids).map_err(|e| (database.clone(), e))?;
    Ok(Some(Stale {
        database,
        default,
        collations,
        indexes,
    }))
}

/// The indexes (not partitioned parents: their partitions' indexes are listed themselves) with
/// a key column of one of the collations `oids`.
fn indexes_on(
    client: &mut postgres::Client,
    oids: &[u32],
) -> std::result::Result<Vec<Qualified>, postgres::Error> {
    let rows = client.query(
        "SELECT DISTINCT n.nspname, c.relname FROM pg_attribute a \
         JOIN pg_index i ON i.indexrelid = a.attrelid \
         JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'i' \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attcollation = ANY($1::oid[]) ORDER BY 1, 2",
        &[&oids],
    )?;
    Ok(rows
        .iter()
        .map(|r| Qualified {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

fn sql_error(place: &str, e: &postgres::Error) -> Error {
    Error::Server {
        what: format!(
            "cannot compare collation versions in {place}: {}",
            super::init_scripts::describe(e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Versions {
        Versions {
            recorded: "2.28".into(),
            actual: "2.36".into(),
        }
    }

    #[test]
    fn odd_names_are_quoted_and_the_refreshes_come_last() {
        let stale = Stale {
            database: "shop \"eu\"".into(),
            default: Some(versions()),
            collations: vec![StaleCollation {
                collation: Qualified {
                    schema: "Sales".into(),
                    name: "de-x".into(),
                },
                versions: versions(),
            }],
            indexes: vec![
                Qualified {
                    schema: "public".into(),
                    name: "items name; DROP TABLE x".into(),
                },
                Qualified {
                    schema: "my\"schema".into(),
                    name: "Idx".into(),
                },
            ],
        };
        let sql: Vec<String> = stale
            .statements(Reindex::Concurrently)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        assert_eq!(
            sql,
            [
                r#"REINDEX INDEX CONCURRENTLY "public"."items name; DROP TABLE x""#,
                r#"REINDEX INDEX CONCURRENTLY "my""schema"."Idx""#,
                r#"ALTER COLLATION "Sales"."de-x" REFRESH VERSION"#,
                r#"ALTER DATABASE "shop ""eu""" REFRESH COLLATION VERSION"#,
            ]
        );
        let locking = stale.statements(Reindex::Locking);
        assert_eq!(
            locking[0].sql,
            r#"REINDEX INDEX "public"."items name; DROP TABLE x""#
        );
        assert_eq!(locking[3].target, "database shop \"eu\"");
    }

    #[test]
    fn a_stale_collation_alone_leaves_the_database_version_alone() {
        let stale = Stale {
            database: "shop".into(),
            default: None,
            collations: vec![StaleCollation {
                collation: Qualified {
                    schema: "public".into(),
                    name: "de".into(),
                },
                versions: versions(),
            }],
            indexes: vec![],
        };
        let sql: Vec<String> = stale
            .statements(Reindex::Concurrently)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        assert_eq!(sql, [r#"ALTER COLLATION "public"."de" REFRESH VERSION"#]);
        assert_eq!(stale.index_list(), "none");
        assert!(
            stale
                .summary()
                .contains("collation public.de version 2.28 recorded, 2.36 here")
        );
    }
}
