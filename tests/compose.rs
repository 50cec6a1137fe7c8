//! `pgwarden init --from-compose`: a compose project made by the test becomes `pgwarden.toml`,
//! and `pgwarden start` serves what the compose service served; and the refusals: a compose
//! file another user planted above the working directory, an existing `pgwarden.toml`, a
//! `postgres:15` service, a YAML bomb.

mod common;

use common::{as_intruder, free_port, test_dir};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(180);

/// `pgwarden ARGS` in `cwd`, to completion, with this test's data root and registry and only
/// `envs` of pgwarden's and the image's variables.
fn pgwarden(root: &Path, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let data_root = root.join("data-root");
    let runtime = root.join("runtime");
    for dir in [&data_root, &runtime] {
        std::fs::create_dir_all(dir).unwrap();
        common::set_mode(dir, 0o755);
    }
    let (archive, install) = (common::npm_archive(), common::shared_install_dir());
    let mut all = vec![
        ("PGWARDEN_DATA_ROOT", data_root.to_str().unwrap()),
        ("PGWARDEN_RUNTIME_DIR", runtime.to_str().unwrap()),
        ("PGWARDEN_ARCHIVE", archive.to_str().unwrap()),
        ("PGWARDEN_INSTALL_DIR", install.to_str().unwrap()),
    ];
    all.extend_from_slice(envs);
    common::run_in(cwd, args, &all, LONG)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file with `content`, its directories made (0755).
fn put(path: &Path, content: &str, mode: u32) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    common::set_mode(dir, 0o755);
    std::fs::write(path, content).unwrap();
    common::set_mode(path, mode);
}

/// Stops the instance started from `dir` when the test ends, failed or not.
struct StopOnDrop<'a> {
    root: &'a Path,
    dir: PathBuf,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        pgwarden(self.root, &self.dir, &["stop"], &[]);
        common::kill_processes_under(self.root);
    }
}

/// The seed's service, as a compose project has it: the port from `.env`, the user from an
/// `env_file`, the database in `environment`, the password as a secret file, a server setting
/// on the command line, init scripts and a data volume; beside it, another service.
fn seed_project(dir: &Path, port: u16) {
    put(
        &dir.join("compose.yaml"),
        r#"x-logging: &logging
  driver: json-file
services:
  web:
    image: nginx:1.27
    depends_on: [db]
    logging: *logging
  db:
    image: postgres:16-bookworm
    container_name: shop-db
    restart: unless-stopped
    ports:
      - "127.0.0.1:${PGPORT:-5433}:5432"
    env_file: db.env
    environment:
      POSTGRES_DB: ${SHOP_DB:-shopdb}
      POSTGRES_PASSWORD_FILE: /run/secrets/pg_password
    secrets: [pg_password]
    command: ["postgres", "-c", "max_connections=37"]
    volumes:
      - ./initdb:/docker-entrypoint-initdb.d:ro
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U shopper"]
      interval: 5s
    logging: *logging
secrets:
  pg_password:
    file: ./secrets/pg_password.txt
volumes:
  pgdata:
"#,
        0o644,
    );
    put(&dir.join(".env"), &format!("PGPORT={port}\n"), 0o644);
    put(&dir.join("db.env"), "POSTGRES_USER=shopper\n", 0o644);
    put(
        &dir.join("secrets/pg_password.txt"),
        "compose-secret-pw\n",
        0o600,
    );
    put(
        &dir.join("initdb/01-seed.sql"),
        "CREATE TABLE seeded (x int); INSERT INTO seeded VALUES (42);\n",
        0o644,
    );
}

#[test]
fn the_seed_service_becomes_pgwarden_toml_and_start_serves_it() {
    let tmp = test_dir();
    let root = tmp.path();
    let project = root.join("shop");
    let port = free_port();
    seed_project(&project, port);
    let below = project.join("src/app");
    std::fs::create_dir_all(&below).unwrap();
    common::set_mode(&project.join("src"), 0o755);
    common::set_mode(&below, 0o755);

    // Found from a directory below, as compose finds it; written beside it.
    let init = pgwarden(root, &below, &["init", "--from-compose"], &[]);
    assert_eq!(init.status.code(), Some(0), "{}", text(&init));
    let written = std::fs::read_to_string(project.join("pgwarden.toml")).unwrap();
    assert!(!below.join("pgwarden.toml").exists());
    for line in [
        format!("port = {port}"),
        "user = \"shopper\"".to_string(),
        "database = \"shopdb\"".to_string(),
        "password_file = \"secrets/pg_password.txt\"".to_string(),
        "init_dir = \"initdb\"".to_string(),
        "max_connections = \"37\"".to_string(),
    ] {
        assert!(written.contains(&line), "{line} missing:\n{written}");
    }
    assert!(!written.contains("compose-secret-pw"), "{written}");
    // One comment per mapped key.
    let lines: Vec<&str> = written.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(
                lines[i - 1].starts_with('#'),
                "no comment above {line}:\n{written}"
            );
        }
    }
    let summary = text(&init);
    assert!(summary.contains("handled by pgwarden:"), "{summary}");
    assert!(summary.contains("healthcheck"), "{summary}");
    assert!(summary.contains("not carried over:"), "{summary}");
    assert!(summary.contains("container_name"), "{summary}");
    // The named volume: its docker directory, and how to take it over from elsewhere.
    assert!(
        summary.contains("_pgdata/_data") && summary.contains("--data-from"),
        "{summary}"
    );

    let _stop = StopOnDrop {
        root,
        dir: project.clone(),
    };
    let start = pgwarden(root, &project, &["start"], &[]);
    assert_eq!(start.status.code(), Some(0), "{}", text(&start));
    assert!(
        text(&start).contains(&format!("postgres://shopper@127.0.0.1:{port}/shopdb")),
        "{}",
        text(&start)
    );
    let mut client = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={port} user=shopper password=compose-secret-pw dbname=shopdb"
        ),
        postgres::NoTls,
    )
    .expect("the compose file's user, password and database connect");
    let max: String = client
        .query_one("SHOW max_connections", &[])
        .unwrap()
        .get(0);
    assert_eq!(max, "37");
    let seeded: i32 = client
        .query_one("SELECT x FROM seeded", &[])
        .unwrap()
        .get(0);
    assert_eq!(seeded, 42, "the init script ran");
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
}

#[test]
fn a_compose_file_another_user_planted_above_the_working_directory_is_refused() {
    if !common::require_root("making a second local user and running pgwarden as root") {
        return;
    }
    let intruder = common::intruder();
    let tmp = test_dir();
    let root = tmp.path();
    let planted = root.join("planted");
    std::fs::create_dir_all(&planted).unwrap();
    std::os::unix::fs::chown(
        &planted,
        Some(intruder.uid.as_raw()),
        Some(intruder.gid.as_raw()),
    )
    .unwrap();
    common::set_mode(&planted, 0o755);
    let work = planted.join("work");
    std::fs::create_dir_all(&work).unwrap();
    common::set_mode(&work, 0o755);
    let compose = planted.join("compose.yaml");
    // The intruder's service would have root take over a cluster of theirs and leak root's
    // environment into the file through interpolation.
    as_intruder(&format!(
        "printf '%s' 'services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: \"${{ROOT_SECRET}}\"\n    volumes: [\"./theirs:/var/lib/postgresql/data\"]\n' > {}",
        compose.display()
    ));
    let out = pgwarden(
        root,
        &work,
        &["init", "--from-compose"],
        &[("ROOT_SECRET", "root-only-value")],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "refusing to read the compose file {}",
            compose.display()
        )),
        "{all}"
    );
    assert!(all.contains(common::INTRUDER), "the owner is named: {all}");
    assert!(!all.contains("root-only-value"), "{all}");
    assert!(!work.join("pgwarden.toml").exists() && !planted.join("pgwarden.toml").exists());

    // Named on the command line, the same file is the user's choice.
    let named = pgwarden(
        root,
        &work,
        &["init", "--from-compose", compose.to_str().unwrap()],
        &[("ROOT_SECRET", "chosen")],
    );
    assert_eq!(named.status.code(), Some(0), "{}", text(&named));
    assert!(
        !text(&named).contains("refusing to read"),
        "{}",
        text(&named)
    );
}

#[test]
fn an_existing_pgwarden_toml_is_left_as_it_was() {
    let tmp = test_dir();
    let root = tmp.path();
    let project = root.join("shop");
    seed_project(&project, free_port());
    let existing = "# mine\nport = 6543\n";
    put(&project.join("pgwarden.toml"), existing, 0o644);
    let out = pgwarden(root, &project, &["init", "--from-compose"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    assert!(text(&out).contains("help:"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(project.join("pgwarden.toml")).unwrap(),
        existing
    );
    let names: Vec<_> = std::fs::read_dir(&project)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pgwarden"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}

#[test]
fn a_postgres_15_service_is_refused_plainly() {
    let tmp = test_dir();
    let root = tmp.path();
    let file = root.join("old/docker-compose.yml");
    put(
        &file,
        "services:\n  db:\n    image: postgres:15-alpine\n    ports: [\"5432:5432\"]\n",
        0o644,
    );
    let out = pgwarden(
        root,
        root,
        &["init", "--from-compose", file.to_str().unwrap()],
        &[],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("PostgreSQL 15"), "{all}");
    assert!(all.contains("PostgreSQL 16 only"), "{all}");
    assert!(all.contains("pgwarden upgrade"), "{all}");
    assert!(!root.join("old/pgwarden.toml").exists());
}

#[test]
fn a_yaml_bomb_is_refused_without_expanding_it() {
    let tmp = test_dir();
    let root = tmp.path();
    let mut bomb = String::from(
        "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(",");
        bomb.push_str(&format!("x-{}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    bomb.push_str("services:\n  db:\n    image: postgres:16\n    command: *i\n");
    put(&root.join("p/compose.yaml"), &bomb, 0o644);
    let started = Instant::now();
    let out = pgwarden(root, &root.join("p"), &["init", "--from-compose"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("billion laughs"), "{all}");
    assert!(!root.join("p/pgwarden.toml").exists());
    eprintln!("[test] refused after {:?}", started.elapsed());
}
