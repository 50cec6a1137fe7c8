//! `pgwarden backup`: an online, consistent base backup of the running cluster, without
//! `pg_basebackup`, by PostgreSQL's low-level API.
//!
//! On one session (the Unix socket, as pgwarden's administration role), held open throughout:
//! 1. a temporary physical replication slot that reserves WAL at once, so that no segment from
//!    the backup's start onwards is recycled while the files are copied (it goes away with the
//!    session, also when pgwarden is killed);
//! 2. `pg_backup_start(label, fast => true)`: a checkpoint; its redo LSN is the start LSN;
//! 3. the data directory is streamed into the archive while the server keeps serving writes,
//!    leaving out what the server rebuilds (the list `pg_basebackup` uses: the contents of
//!    `pg_wal/`, `pg_replslot/`, `pg_stat_tmp/`, …, and `postmaster.pid`, `postmaster.opts`,
//!    `pg_internal.init`, `pgsql_tmp*`). A file that changes while it is read is fine (the WAL
//!    replay repairs it, full-page writes are on); one that grows is cut at the size it had when
//!    opened, one that shrinks is padded with zeros, one that vanishes is left out — as
//!    `pg_basebackup` does. Tablespaces: the `pg_tblspc/<oid>` links are left out and each
//!    tablespace's version directory is streamed under its own prefix
//!    ([`super::tablespaces`]);
//! 4. `pg_backup_stop(wait_for_archive => false)` returns the stop LSN and the `backup_label`
//!    and `tablespace_map` contents, which go into the archive (never into the live data dir);
//!    the map must name exactly the tablespaces copied;
//! 5. the WAL segments from the start's to the stop's go into the archive's `pg_wal/`.
//!
//! The archive is written as `.<name>.partial` beside the target (zstd, fast level, compressed
//! in one or two zstd worker threads beside the reading one, 1 MiB write buffer: memory does not
//! grow with the cluster), hashed as it is written, fsynced and renamed;
//! the manifest ([`super::manifest`]) is written last. A failure or a kill leaves no archive
//! under the final name, and the server ends the backup when the session goes.

use super::manifest::{ArchiveSum, FileSum, Manifest};
use super::tablespaces::{self, Live, TablespaceEntry};
use crate::config::ADMIN_ROLE;
use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The running server a backup is taken of.
#[derive(Debug, Clone)]
pub struct Server {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// What a finished backup produced.
#[derive(Debug)]
pub struct Finished {
    pub archive: PathBuf,
    pub manifest: Manifest,
    pub elapsed: Duration,
}

/// Directories whose contents the server rebuilds (kept as empty directories).
const EXCLUDE_CONTENTS: [&str; 8] = [
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

/// Top-level files left out.
const EXCLUDE_FILES: [&str; 7] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// True for a name left out anywhere in the tree.
fn excluded_anywhere(name: &str) -> bool {
    name == "pg_internal.init" || name.starts_with("pgsql_tmp")
}

/// The default target directory: `<data dir>.backups`, beside the data directory.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".backups");
    data_dir.with_file_name(name)
}

/// Where the archive goes: `target` may name a file (`*.tar.zst`), an existing directory, or a
/// directory to create (ending in `/`); `None` is the backup directory.
pub fn resolve_target(target: Option<&Path>, backup_dir: &Path, now_ms: u64) -> Result<PathBuf> {
    let file_name = format!(
        "backup-{}.{:03}Z{}",
        super::stamp(now_ms).trim_end_matches('Z'),
        now_ms % 1000,
        super::ARCHIVE_SUFFIX
    );
    let path = match target {
        None => backup_dir.join(file_name),
        Some(t) if t.is_dir() || t.as_os_str().to_string_lossy().ends_with('/') => {
            t.join(file_name)
        }
        Some(t) => {
            if !t.to_string_lossy().ends_with(super::ARCHIVE_SUFFIX) {
                return Err(Error::Backup {
                    what: format!(
                        "backup file {} must end in {} (a zstd-compressed tar)\n\
                         help: name a file like backup.tar.zst, or a directory to put a dated backup in",
                        t.display(),
                        super::ARCHIVE_SUFFIX
                    ),
                });
            }
            t.to_path_buf()
        }
    };
    Ok(crate::os::paths::absolute(&path))
}

/// Refuses a target inside the data directory (it would be copied into itself, and a restore
/// of the cluster would remove it).
pub fn check_outside(target: &Path, data_dir: &Path) -> Result<()> {
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // The nearest existing ancestor, resolved (the target's own directory may not exist yet).
    let mut probe = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let resolved = loop {
        if let Ok(p) = std::fs::canonicalize(&probe) {
            break p;
        }
        if !probe.pop() {
            break probe;
        }
    };
    if resolved.starts_with(&data) {
        return Err(Error::Backup {
            what: format!(
                "backup target {} is inside the data directory {}\n\
                 help: put backups outside it, e.g. in {} (the default)",
                target.display(),
                data.display(),
                default_dir(&data).display()
            ),
        });
    }
    Ok(())
}

/// One member of the data directory to copy.
#[derive(Debug)]
struct Member {
    /// The member's name in the archive, `/`-separated.
    rel: String,
    /// The file or directory it is read from.
    source: PathBuf,
    dir: bool,
    size: u64,
    mtime: u64,
}

/// Lists what goes into the backup (directories before their contents): the data directory,
/// then each tablespace's version directory under [`tablespaces::PREFIX`].
fn walk(data_dir: &Path, spaces: &[(Live, String)]) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    walk_into(data_dir, "", &mut out)?;
    if spaces.is_empty() {
        return Ok(out);
    }
    let dir = |rel: String, source: &Path| Member {
        rel,
        source: source.to_path_buf(),
        dir: true,
        size: 0,
        mtime: 0,
    };
    out.push(dir(tablespaces::PREFIX.into(), data_dir));
    for (live, version_dir) in spaces {
        let root = format!("{}/{}", tablespaces::PREFIX, live.oid);
        let source = live.location.join(version_dir);
        if !source.is_dir() {
            return Err(Error::Backup {
                what: format!(
                    "tablespace {} has no directory {} for this cluster; the backup would not restore",
                    live.oid,
                    source.display()
                ),
            });
        }
        out.push(dir(root.clone(), &live.location));
        out.push(dir(format!("{root}/{version_dir}"), &source));
        walk_into(&source, &format!("{root}/{version_dir}/"), &mut out)?;
    }
    Ok(out)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<Member>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A directory removed meanwhile (a dropped database): left out.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !prefix.is_empty() => return Ok(()),
        Err(e) => return Err(e).io("cannot read directory", dir),
    };
    let mut names: Vec<_> = entries.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let top = prefix.is_empty();
        if excluded_anywhere(&name)
            || (top && (EXCLUDE_FILES.contains(&name.as_str()) || name == tablespaces::PREFIX))
        {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let mtime = meta.mtime().max(0) as u64;
        if top && EXCLUDE_CONTENTS.contains(&name.as_str()) {
            // pg_wal may be a symlink (a separate WAL directory): it is a directory in the archive.
            out.push(Member {
                rel: rel.clone(),
                source: entry.path(),
                dir: true,
                size: 0,
                mtime,
            });
            if name == "pg_wal" {
                out.push(Member {
                    rel: format!("{rel}/archive_status"),
                    source: entry.path(),
                    dir: true,
                    size: 0,
                    mtime,
                });
            }
            continue;
        }
        if meta.file_type().is_symlink() {
            // A tablespace's link: recreated from tablespace_map at recovery.
            if prefix == "pg_tblspc/" {
                continue;
            }
            return Err(Error::Backup {
                what: format!(
                    "{} is a symbolic link (a file kept elsewhere); pgwarden backs up the data directory's own \
                     files and its tablespaces, not links elsewhere\n\
                     help: move the file back into the data directory",
                    entry.path().display()
                ),
            });
        }
        if meta.is_dir() {
            out.push(Member {
                rel: rel.clone(),
                source: entry.path(),
                dir: true,
                size: 0,
                mtime,
            });
            walk_into(&entry.path(), &format!("{rel}/"), out)?;
        } else if meta.is_file() {
            out.push(Member {
                rel,
                source: entry.path(),
                dir: false,
                size: meta.len(),
                mtime,
            });
        }
    }
    Ok(())
}

/// Counts and hashes the compressed bytes on their way to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly `remaining` bytes of `inner` (zeros once it ends early), hashing them.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    ended: bool,
    hasher: Sha256,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = if self.ended {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            // The file shrank while it was read: pad (the WAL replay rewrites it).
            self.ended = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Removes the partial archive unless committed.
struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

type Archive = tar::Builder<zstd::Encoder<'static, HashingWriter<BufWriter<File>>>>;

/// Writes one member and returns its checksum entry.
fn append_reader(
    tar: &mut Archive,
    rel: &str,
    size: u64,
    mtime: u64,
    reader: impl Read,
) -> Result<FileSum> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    let mut exact = ExactReader {
        inner: reader,
        remaining: size,
        ended: false,
        hasher: Sha256::new(),
    };
    tar.append_data(&mut header, rel, &mut exact)
        .map_err(|e| write_failed(rel, e))?;
    Ok(FileSum {
        path: rel.to_string(),
        size,
        sha256: hex::encode(exact.hasher.finalize()),
    })
}

fn append_dir(tar: &mut Archive, rel: &str, mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o700);
    header.set_mtime(mtime);
    tar.append_data(&mut header, rel, std::io::empty())
        .map_err(|e| write_failed(rel, e))
}

fn write_failed(rel: &str, source: std::io::Error) -> Error {
    Error::ArchiveWrite {
        member: rel.to_string(),
        source,
    }
}

fn sql_failed(what: &str, e: &postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    Error::Backup {
        what: format!("{what}: {message}"),
    }
}

/// Connects to the server as the administration role on its private socket.
fn connect(server: &Server) -> Result<postgres::Client> {
    postgres::Config::new()
        .host_path(&server.socket_dir)
        .port(server.port)
        .user(ADMIN_ROLE)
        .dbname("postgres")
        .application_name("pgwarden backup")
        .connect_timeout(Duration::from_secs(10))
        .connect(postgres::NoTls)
        .map_err(|e| {
            sql_failed(
                &format!(
                    "cannot log in as {ADMIN_ROLE} on the Unix socket in {} (run the backup as root or as the \
                     user that runs the server)",
                    server.socket_dir.display()
                ),
                &e,
            )
        })
}

/// The segment number of a WAL file name (`TTTTTTTTXXXXXXXXYYYYYYYY`).
pub fn segment_number(name: &str, segment_size: u64) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(hi * (0x1_0000_0000 / segment_size) + lo)
}

/// zstd worker threads: one core is this thread's (reading, SHA-256 of every file and of the
/// archive, tar), the others compress, two at most. Row 14 of BENCHMARKS.md on 2 cores, quiet:
/// 403 MB/s compressing in this thread, 644–670 MB/s with one worker, 557–638 with two (this
/// thread is then the bottleneck, SHA-256 most of its time).
fn compression_workers() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    cores.saturating_sub(1).clamp(1, 2)
}

/// Takes the backup into `archive` (which must not exist). `progress` draws a bar on a terminal.
/// One function per step of the module docs, on one session held open throughout.
pub fn take(server: &Server, archive: &Path, progress: bool) -> Result<Finished> {
    let started = Instant::now();
    let dir = prepare_target(server, archive)?;
    let mut client = connect(server)?;
    let facts = read_server_facts(&mut client)?;
    let planned_bytes = check_space(server, &facts, &dir)?;
    let start = start_backup(&mut client)?;
    let mut out = ArchiveFile::create(archive, &dir)?;
    let bar = progress_bar(progress, planned_bytes);
    let mut copied = copy_cluster(&mut out.tar, server, &facts, &bar)?;
    let stop = stop_backup(&mut client, &copied.live)?;
    append_labels(&mut out.tar, &stop, &mut copied)?;
    wait_until_flushed(&mut client, &stop.lsn)?;
    copy_wal(&mut out.tar, server, &facts, &start, &stop, &mut copied)?;
    // Ends the session: the server drops the temporary slot.
    drop(client);
    let sum = out.commit(archive, &dir)?;
    bar.finish_and_clear();
    let manifest = manifest(server, &facts, start, stop, copied, sum);
    manifest.write_for(archive)?;
    Ok(Finished {
        archive: archive.to_path_buf(),
        manifest,
        elapsed: started.elapsed(),
    })
}

/// What the backup needs to know of the server before it starts.
struct ServerFacts {
    segment_size: u64,
    system_identifier: String,
    /// The tablespaces' version directory (`PG_16_<catalog version>`).
    version_dir: String,
}

impl ServerFacts {
    /// The cluster's live tablespaces, each with its version directory.
    fn spaces(&self, data_dir: &Path) -> Result<Vec<(Live, String)>> {
        Ok(tablespaces::list_live(data_dir)?
            .into_iter()
            .map(|live| (live, self.version_dir.clone()))
            .collect())
    }
}

/// What `pg_backup_start` returned.
struct Started {
    ms: u64,
    label: String,
    lsn: String,
    wal_first: String,
    timeline: u32,
}

/// What `pg_backup_stop` returned.
struct Stopped {
    /// Taken before the call: every transaction acknowledged before this time has its commit
    /// record before the backup's end, so it is in the backup (the manifest's promise).
    ms: u64,
    lsn: String,
    wal_last: String,
    labelfile: String,
    spcmapfile: String,
}

/// What went into the archive so far.
struct Copied {
    files: Vec<FileSum>,
    total_bytes: u64,
    /// The tablespaces copied, listed after `pg_backup_start` (the ones its map will name).
    live: Vec<(Live, String)>,
    /// The bytes copied of each of `live`.
    tablespace_bytes: Vec<u64>,
}

/// Refuses a target inside the cluster or one that exists; makes its directory (private).
fn prepare_target(server: &Server, archive: &Path) -> Result<PathBuf> {
    check_outside(archive, &server.data_dir)?;
    if archive.exists() {
        return Err(Error::Backup {
            what: format!(
                "{} exists already; pgwarden does not overwrite a backup\nhelp: name another file",
                archive.display()
            ),
        });
    }
    let dir = archive.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).io("cannot create the backup directory", &dir)?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(dir)
}

/// The server's WAL settings and identity; refuses `wal_level = minimal`.
fn read_server_facts(client: &mut postgres::Client) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    (SELECT catalog_version_no::bigint FROM pg_control_system())",
            &[],
        )
        .map_err(|e| sql_failed("cannot read the server's settings", &e))?;
    let (wal_level, segment_size, system_identifier, catalog_version): (String, i64, String, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if wal_level == "minimal" {
        return Err(Error::Backup {
            what: "the server runs with wal_level = minimal, which allows no online backup\n\
                   help: remove wal_level from the [server] settings (the default, replica, allows it) and restart"
                .into(),
        });
    }
    Ok(ServerFacts {
        segment_size: segment_size.max(1) as u64,
        system_identifier,
        version_dir: tablespaces::version_dir(catalog_version),
    })
}

/// Checked first: the cluster's size (an upper bound of the compressed archive) plus a little
/// WAL must fit on the target's filesystem. Returns the cluster's size.
fn check_space(server: &Server, facts: &ServerFacts, dir: &Path) -> Result<u64> {
    let planned = walk(&server.data_dir, &facts.spaces(&server.data_dir)?)?;
    let planned_bytes: u64 = planned.iter().map(|m| m.size).sum();
    let needed = planned_bytes + 4 * facts.segment_size;
    if let Some(free) = super::free_space(dir)
        && free < needed
    {
        return Err(Error::Backup {
            what: format!(
                "not enough space for the backup in {}: {} free, the cluster is {} (plus WAL)\n\
                 help: free some space there, or name another target: `pgwarden backup /other/dir/`",
                dir.display(),
                super::human_bytes(free),
                super::human_bytes(planned_bytes)
            ),
        });
    }
    Ok(planned_bytes)
}

/// Steps 1 and 2: the temporary slot that keeps the WAL, then `pg_backup_start`.
fn start_backup(client: &mut postgres::Client) -> Result<Started> {
    let slot = format!("pgwarden_backup_{}", std::process::id());
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true, true)",
            &[&slot],
        )
        .map_err(|e| {
            sql_failed(
                "cannot create the temporary replication slot that keeps the backup's WAL \
                 (max_replication_slots may be 0, or all slots are in use)",
                &e,
            )
        })?;
    let ms = super::now_ms();
    let label = format!("pgwarden {}", super::rfc3339(ms));
    let row = client
        .query_one(
            "SELECT lsn::text, pg_walfile_name(lsn) FROM pg_backup_start($1, true) AS lsn",
            &[&label],
        )
        .map_err(|e| sql_failed("pg_backup_start failed", &e))?;
    let (lsn, wal_first): (String, String) = (row.get(0), row.get(1));
    let timeline = u32::from_str_radix(&wal_first[..8], 16).unwrap_or(1);
    Ok(Started {
        ms,
        label,
        lsn,
        wal_first,
        timeline,
    })
}

/// The archive being written: `.<name>.partial` beside the target, removed unless committed.
struct ArchiveFile {
    tar: Archive,
    partial: Partial,
}

impl ArchiveFile {
    fn create(archive: &Path, dir: &Path) -> Result<ArchiveFile> {
        let partial_path = dir.join(format!(
            ".{}.partial",
            archive.file_name().unwrap_or_default().to_string_lossy()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial_path)
            .io("cannot create", &partial_path)?;
        let partial = Partial {
            path: partial_path.clone(),
            committed: false,
        };
        let writer = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
        };
        let mut encoder =
            zstd::Encoder::new(writer, 1).io("cannot start compressing into", &partial_path)?;
        // Compression in zstd's worker threads, beside this one (which reads, hashes and
        // writes): the same zstd format; ~9 MB more memory per worker (job buffers), whatever
        // the cluster's size.
        encoder
            .multithread(compression_workers())
            .io("cannot start compressing into", &partial_path)?;
        Ok(ArchiveFile {
            tar: tar::Builder::new(encoder),
            partial,
        })
    }

    /// Ends the archive, flushes it to disk and renames it to `archive`; its size and digest.
    fn commit(mut self, archive: &Path, dir: &Path) -> Result<ArchiveSum> {
        let partial_path = self.partial.path.clone();
        let encoder = self
            .tar
            .into_inner()
            .map_err(|e| write_failed("the end of the archive", e))?;
        let mut writer = encoder
            .finish()
            .map_err(|e| write_failed("the end of the archive", e))?;
        writer
            .flush()
            .map_err(|e| write_failed("the end of the archive", e))?;
        let HashingWriter {
            inner,
            hasher,
            written,
        } = writer;
        let file = inner
            .into_inner()
            .map_err(|e| write_failed("the end of the archive", e.into_error()))?;
        file.sync_all().io("cannot flush", &partial_path)?;
        drop(file);
        std::fs::rename(&partial_path, archive).io("cannot rename the backup into", archive)?;
        self.partial.committed = true;
        super::sync_dir(dir);
        Ok(ArchiveSum {
            name: archive
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            size: written,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

fn progress_bar(progress: bool, planned_bytes: u64) -> indicatif::ProgressBar {
    let bar = if progress {
        indicatif::ProgressBar::new(planned_bytes)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "backup {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// Step 3: the data directory and its tablespaces, streamed while the server serves writes.
fn copy_cluster(
    tar: &mut Archive,
    server: &Server,
    facts: &ServerFacts,
    bar: &indicatif::ProgressBar,
) -> Result<Copied> {
    let mut files = Vec::new();
    let mut total_bytes = 0u64;
    // Listed after pg_backup_start: the tablespaces its map will name.
    let live = facts.spaces(&server.data_dir)?;
    let mut tablespace_bytes = vec![0u64; live.len()];
    for member in walk(&server.data_dir, &live)? {
        if member.dir {
            append_dir(tar, &member.rel, member.mtime)?;
            continue;
        }
        let path = member.source.clone();
        let file = match File::open(&path) {
            Ok(f) => f,
            // Removed since the listing (a dropped table): the WAL replay knows.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).io("cannot read", &path),
        };
        let size = file.metadata().io("cannot read", &path)?.len();
        let sum = append_reader(tar, &member.rel, size, member.mtime, file)?;
        total_bytes += size;
        if let Some(i) = live.iter().position(|(l, _)| {
            member
                .rel
                .strip_prefix(tablespaces::PREFIX)
                .and_then(|r| r.strip_prefix('/'))
                .and_then(|r| r.strip_prefix(l.oid.as_str()))
                .is_some_and(|r| r.starts_with('/'))
        }) {
            tablespace_bytes[i] += size;
        }
        bar.inc(size);
        files.push(sum);
    }
    Ok(Copied {
        files,
        total_bytes,
        live,
        tablespace_bytes,
    })
}

/// Step 4: `pg_backup_stop`; its tablespace map must name exactly the tablespaces copied (one
/// created or dropped meanwhile would not restore).
fn stop_backup(client: &mut postgres::Client, live: &[(Live, String)]) -> Result<Stopped> {
    let ms = super::now_ms();
    let row = client
        .query_one(
            "SELECT lsn::text, pg_walfile_name(lsn), labelfile, spcmapfile \
             FROM pg_backup_stop(false) AS s(lsn, labelfile, spcmapfile)",
            &[],
        )
        .map_err(|e| sql_failed("pg_backup_stop failed", &e))?;
    let (lsn, wal_last, labelfile, spcmapfile): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let mut mapped = tablespaces::parse_map(&spcmapfile).ok_or_else(|| Error::Backup {
        what: format!(
            "pg_backup_stop returned a tablespace_map pgwarden cannot read: {spcmapfile:?}"
        ),
    })?;
    mapped.sort();
    let copied: Vec<(String, String)> = live
        .iter()
        .map(|(l, _)| (l.oid.clone(), l.location.to_string_lossy().into_owned()))
        .collect();
    if mapped != copied {
        return Err(Error::Backup {
            what: format!(
                "the tablespaces changed while the backup ran (the server lists {mapped:?}, pgwarden copied {copied:?})\n\
                 help: run the backup again"
            ),
        });
    }
    Ok(Stopped {
        ms,
        lsn,
        wal_last,
        labelfile,
        spcmapfile,
    })
}

/// `backup_label` and `tablespace_map` into the archive (never into the live data dir).
fn append_labels(tar: &mut Archive, stop: &Stopped, copied: &mut Copied) -> Result<()> {
    for (name, text) in [
        ("backup_label", &stop.labelfile),
        ("tablespace_map", &stop.spcmapfile),
    ] {
        let sum = append_reader(
            tar,
            name,
            text.len() as u64,
            stop.ms / 1000,
            text.as_bytes(),
        )?;
        copied.files.push(sum);
    }
    Ok(())
}

/// The stop LSN's segment must be on disk before it is copied (a minute at most).
fn wait_until_flushed(client: &mut postgres::Client, stop_lsn: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let flushed: bool = client
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&stop_lsn],
            )
            .map_err(|e| sql_failed("cannot read the WAL flush position", &e))?
            .get(0);
        if flushed || Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Step 5: the WAL segments from the start's to the stop's (and the timeline history files)
/// into the archive's `pg_wal/`; every one of them must be there.
fn copy_wal(
    tar: &mut Archive,
    server: &Server,
    facts: &ServerFacts,
    start: &Started,
    stop: &Stopped,
    copied: &mut Copied,
) -> Result<()> {
    let (wal_first, wal_last, segment_size) =
        (&start.wal_first, &stop.wal_last, facts.segment_size);
    let wal_dir = server.data_dir.join("pg_wal");
    let (Some(first), Some(last)) = (
        segment_number(wal_first, segment_size),
        segment_number(wal_last, segment_size),
    ) else {
        return Err(Error::Backup {
            what: format!("the server named unexpected WAL files {wal_first:?} and {wal_last:?}"),
        });
    };
    let mut wal: Vec<String> = std::fs::read_dir(&wal_dir)
        .io("cannot read", &wal_dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| {
            name.ends_with(".history")
                || (name.get(..8) == wal_first.get(..8)
                    && segment_number(name, segment_size).is_some_and(|n| n >= first && n <= last))
        })
        .collect();
    wal.sort();
    let segments = wal.iter().filter(|n| !n.ends_with(".history")).count() as u64;
    if segments != last - first + 1 {
        return Err(Error::Backup {
            what: format!(
                "the WAL from {wal_first} to {wal_last} is not all in {} ({segments} of {} segments); the backup \
                 would not restore\nhelp: run the backup again",
                wal_dir.display(),
                last - first + 1
            ),
        });
    }
    for name in &wal {
        let path = wal_dir.join(name);
        let file = File::open(&path).io("cannot read", &path)?;
        let size = file.metadata().io("cannot read", &path)?.len();
        let sum = append_reader(tar, &format!("pg_wal/{name}"), size, stop.ms / 1000, file)?;
        copied.total_bytes += size;
        copied.files.push(sum);
    }
    Ok(())
}

/// The manifest of the finished backup (written last, beside the archive).
fn manifest(
    server: &Server,
    facts: &ServerFacts,
    start: Started,
    stop: Stopped,
    copied: Copied,
    archive: ArchiveSum,
) -> Manifest {
    let tablespaces: Vec<TablespaceEntry> = copied
        .live
        .iter()
        .zip(&copied.tablespace_bytes)
        .map(|((l, version_dir), bytes)| TablespaceEntry {
            oid: l.oid.clone(),
            location: l.location.to_string_lossy().into_owned(),
            version_dir: version_dir.clone(),
            bytes: *bytes,
        })
        .collect();
    Manifest {
        format: if tablespaces.is_empty() {
            super::manifest::FORMAT
        } else {
            super::manifest::FORMAT_TABLESPACES
        },
        created_by: concat!("pgwarden ", env!("CARGO_PKG_VERSION")).into(),
        label: start.label,
        postgresql_major: std::fs::read_to_string(server.data_dir.join("PG_VERSION"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        system_identifier: facts.system_identifier.clone(),
        timeline: start.timeline,
        start_lsn: start.lsn,
        stop_lsn: stop.lsn,
        start_ms: start.ms,
        stop_ms: stop.ms,
        start_time: super::rfc3339(start.ms),
        stop_time: super::rfc3339(stop.ms),
        wal_first: start.wal_first,
        wal_last: stop.wal_last,
        archive,
        files: copied.files,
        total_bytes: copied.total_bytes,
        wal_segment_size: facts.segment_size,
        tablespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_numbers_follow_the_file_names() {
        let size = 16 * 1024 * 1024;
        assert_eq!(segment_number("000000010000000000000003", size), Some(3));
        assert_eq!(
            segment_number("0000000100000001000000FF", size),
            Some(256 + 255)
        );
        assert_eq!(segment_number("00000001.history", size), None);
    }

    #[test]
    fn exact_reader_pads_and_cuts() {
        let mut out = Vec::new();
        let mut r = ExactReader {
            inner: &b"abc"[..],
            remaining: 5,
            ended: false,
            hasher: Sha256::new(),
        };
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        let mut out = Vec::new();
        let mut r = ExactReader {
            inner: &b"abcdef"[..],
            remaining: 2,
            ended: false,
            hasher: Sha256::new(),
        };
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }

    #[test]
    fn targets_resolve_and_the_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let t = resolve_target(None, &default_dir(&data), 7).unwrap();
        assert_eq!(
            t,
            dir.path()
                .join("data.backups/backup-19700101T000000.007Z.tar.zst")
        );
        assert!(resolve_target(Some(Path::new("x.tar")), &data, 0).is_err());
        let inside = resolve_target(Some(&data.join("sub/")), &data, 0).unwrap();
        assert!(check_outside(&inside, &data).is_err());
        assert!(check_outside(&t, &data).is_ok());
    }
}
