//! The compose syntax forms, each read from a real project directory into a plan.

use super::find::{self, ComposeFile};
use super::map::{self, Plan};
use std::path::Path;

/// A compose project in a temporary directory: `compose.yaml` = `yaml`, plus `files`.
fn project(yaml: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, ComposeFile) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
    let file = find::find(Some(&dir.path().join("compose.yaml")), Path::new("/")).unwrap();
    (dir, file)
}

/// A row: the service's body, the project's other files, what is expected.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn env(name: &str) -> Option<String> {
    match name {
        "SHELL_PORT" => Some("7001".into()),
        "SHELL_USER" => Some("from_shell".into()),
        _ => None,
    }
}

fn plan_of(yaml: &str, files: &[(&str, &str)]) -> Plan {
    let (_dir, file) = project(yaml, files);
    super::plan(&file, None, &env).unwrap_or_else(|e| panic!("{e}"))
}

fn refusal(yaml: &str, files: &[(&str, &str)]) -> String {
    let (_dir, file) = project(yaml, files);
    match super::plan(&file, None, &env) {
        Ok(plan) => panic!("accepted: {plan:?}"),
        Err(e) => e.to_string(),
    }
}

fn key(plan: &Plan, key: &str) -> Option<String> {
    plan.keys
        .iter()
        .chain(&plan.server)
        .find(|e| e.key == key)
        .map(|e| match &e.value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

fn service(body: &str) -> String {
    format!("services:\n  db:\n    image: postgres:16\n{body}")
}

#[test]
fn every_port_form_gives_the_published_port() {
    let table: &[(&str, Option<&str>)] = &[
        ("    ports: [\"127.0.0.1:5433:5432\"]\n", Some("5433")),
        ("    ports: [\"5434:5432\"]\n", Some("5434")),
        ("    ports:\n      - 5435:5432/tcp\n", Some("5435")),
        ("    ports: [\"[::1]:5436:5432\"]\n", Some("5436")),
        (
            "    ports: [\"127.0.0.1:${SHELL_PORT}:5432\"]\n",
            Some("7001"),
        ),
        (
            "    ports: [\"127.0.0.1:${NOPE:-5437}:5432\"]\n",
            Some("5437"),
        ),
        ("    ports: [\"5438-5440:5432\"]\n", Some("5438")),
        (
            "    ports:\n      - target: 5432\n        published: \"5441\"\n        host_ip: 127.0.0.1\n",
            Some("5441"),
        ),
        (
            "    ports:\n      - target: 5432\n        published: 5442\n",
            Some("5442"),
        ),
        ("    ports: [\"8080:80\", \"5443:5432\"]\n", Some("5443")),
        ("    ports: [\"5432\"]\n", None),
        ("    expose: [\"5432\"]\n", None),
    ];
    for (body, want) in table {
        let plan = plan_of(&service(body), &[]);
        assert_eq!(key(&plan, "port").as_deref(), *want, "{body}");
    }
}

#[test]
fn all_interfaces_are_said_to_become_loopback() {
    for body in [
        "    ports: [\"5433:5432\"]\n",
        "    ports: [\"0.0.0.0:5433:5432\"]\n",
        "    ports:\n      - target: 5432\n        published: 5433\n",
    ] {
        let plan = plan_of(&service(body), &[]);
        assert!(
            plan.actions.iter().any(|a| a.contains("127.0.0.1 only")),
            "{body}: {plan:?}"
        );
    }
    let plan = plan_of(&service("    ports: [\"127.0.0.1:5433:5432\"]\n"), &[]);
    assert!(plan.actions.is_empty(), "{plan:?}");
    let plan = plan_of(&service("    ports: [\"[::1]:5433:5432\"]\n"), &[]);
    assert_eq!(key(&plan, "listen_address").as_deref(), Some("::1"));
}

#[test]
fn environment_in_map_and_list_form_env_files_in_every_form() {
    let table: &[Case] = &[
        (
            "    environment:\n      POSTGRES_USER: mapped\n",
            &[],
            "mapped",
        ),
        (
            "    environment:\n      - POSTGRES_USER=listed\n",
            &[],
            "listed",
        ),
        ("    environment:\n      - POSTGRES_USER\n", &[], "postgres"),
        ("    environment:\n      POSTGRES_USER:\n", &[], "postgres"),
        (
            "    environment:\n      POSTGRES_USER: ${SHELL_USER}\n",
            &[],
            "from_shell",
        ),
        (
            "    environment:\n      POSTGRES_USER: ${DOT_USER}\n",
            &[(".env", "DOT_USER=from_dotenv\n")],
            "from_dotenv",
        ),
        (
            "    environment:\n      POSTGRES_USER: ${SHELL_USER}\n",
            &[(".env", "SHELL_USER=dotenv_loses\n")],
            "from_shell",
        ),
        (
            "    env_file: db.env\n",
            &[("db.env", "POSTGRES_USER=string_form\n")],
            "string_form",
        ),
        (
            "    env_file: [a.env, b.env]\n",
            &[
                ("a.env", "POSTGRES_USER=first\n"),
                ("b.env", "POSTGRES_USER=second\n"),
            ],
            "second",
        ),
        (
            "    env_file:\n      - path: ./db.env\n        required: true\n      - path: ./missing.env\n        required: false\n",
            &[("db.env", "POSTGRES_USER=long_form\n")],
            "long_form",
        ),
        (
            "    env_file: db.env\n    environment:\n      POSTGRES_USER: environment_wins\n",
            &[("db.env", "POSTGRES_USER=file_loses\n")],
            "environment_wins",
        ),
        ("    image: postgres:16\n", &[], "postgres"),
    ];
    for (body, files, want) in table {
        let yaml = format!("services:\n  db:\n    image: postgres:16\n{body}").replace(
            "    image: postgres:16\n    image: postgres:16\n",
            "    image: postgres:16\n",
        );
        let plan = plan_of(&yaml, files);
        assert_eq!(key(&plan, "user").as_deref(), Some(*want), "{body}");
    }
}

#[test]
fn a_required_env_file_that_is_missing_is_refused() {
    let err = refusal(&service("    env_file: [gone.env]\n"), &[]);
    assert!(err.contains("gone.env does not exist"), "{err}");
    assert!(err.contains("required: false"), "{err}");
}

#[test]
fn required_variables_stop_the_mapping_with_their_message() {
    let err = refusal(
        &service("    environment:\n      POSTGRES_DB: ${DB_NAME:?set DB_NAME in .env}\n"),
        &[],
    );
    assert!(
        err.contains("DB_NAME is unset or empty: set DB_NAME in .env"),
        "{err}"
    );
    let err = refusal(
        &service("    environment:\n      POSTGRES_DB: ${DB_NAME?needed}\n"),
        &[],
    );
    assert!(err.contains("DB_NAME is unset: needed"), "{err}");
    let plan = plan_of(
        &service("    environment:\n      POSTGRES_DB: ${DB_NAME?needed}\n"),
        &[(".env", "DB_NAME=\n")],
    );
    assert_eq!(key(&plan, "database"), None, "{plan:?}");
    let plan = plan_of(
        &service("    environment:\n      POSTGRES_DB: $${literal}\n"),
        &[],
    );
    assert_eq!(key(&plan, "database").as_deref(), Some("${literal}"));
}

#[test]
fn a_password_is_never_copied_and_its_place_is_named() {
    let table: &[Case] = &[
        (
            "    environment:\n      POSTGRES_PASSWORD: hunter2literal\n",
            &[],
            "written as is in",
        ),
        (
            "    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n",
            &[(".env", "DB_PASSWORD=hunter2dotenv\n")],
            "$DB_PASSWORD from",
        ),
        (
            "    env_file: db.env\n",
            &[("db.env", "POSTGRES_PASSWORD=hunter2envfile\n")],
            "in the env_file",
        ),
        (
            "    environment:\n      - POSTGRES_PASSWORD\n",
            &[(".env", "POSTGRES_PASSWORD=hunter2passed\n")],
            "passed through from your environment",
        ),
    ];
    for (body, files, place) in table {
        let plan = plan_of(&service(body), files);
        let text = super::write::render(&plan);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(key(&plan, "password").is_none() && key(&plan, "password_file").is_none());
        assert!(
            plan.actions
                .iter()
                .any(|a| a.contains(place) && a.contains("POSTGRES_PASSWORD")),
            "{body}: {plan:?}"
        );
    }
}

#[test]
fn secrets_and_mounted_files_become_password_files() {
    let secret_short = "services:\n  db:\n    image: postgres:16\n    environment:\n      \
        POSTGRES_PASSWORD_FILE: /run/secrets/pg_pw\n    secrets: [pg_pw]\nsecrets:\n  pg_pw:\n    file: ./secrets/pw.txt\n";
    let plan = plan_of(secret_short, &[]);
    assert_eq!(
        key(&plan, "password_file").as_deref(),
        Some("secrets/pw.txt")
    );

    let secret_long = "services:\n  db:\n    image: postgres:16\n    environment:\n      \
        POSTGRES_PASSWORD_FILE: /run/secrets/custom\n      POSTGRES_USER_FILE: /run/secrets/pg_user\n    \
        secrets:\n      - source: pg_pw\n        target: custom\n      - pg_user\nsecrets:\n  pg_pw:\n    \
        file: /etc/pw\n  pg_user:\n    file: user.txt\n";
    let plan = plan_of(secret_long, &[]);
    assert_eq!(key(&plan, "password_file").as_deref(), Some("/etc/pw"));
    assert_eq!(key(&plan, "user_file").as_deref(), Some("user.txt"));
    assert_eq!(key(&plan, "user"), None, "{plan:?}");

    let from_env = "services:\n  db:\n    image: postgres:16\n    environment:\n      \
        POSTGRES_PASSWORD_FILE: /run/secrets/pw\n    secrets: [pw]\nsecrets:\n  pw:\n    environment: DB_PW\n";
    let plan = plan_of(from_env, &[]);
    assert!(plan.actions.iter().any(|a| a.contains("DB_PW")), "{plan:?}");

    let mounted = "services:\n  db:\n    image: postgres:16\n    environment:\n      \
        POSTGRES_PASSWORD_FILE: /run/pw/password\n    volumes: [\"./pw:/run/pw:ro\"]\n";
    let plan = plan_of(mounted, &[]);
    assert_eq!(key(&plan, "password_file").as_deref(), Some("pw/password"));
}

#[test]
fn command_in_string_and_list_form_and_a_mounted_config_file() {
    let table: &[(&str, &[(&str, &str)])] = &[
        (
            "    command: postgres -c max_connections=37 -c 'work_mem=8MB'\n",
            &[],
        ),
        (
            "    command: [\"postgres\", \"-c\", \"max_connections=37\", \"-cwork_mem=8MB\"]\n",
            &[],
        ),
        (
            "    command:\n      - -c\n      - max_connections=37\n      - --work-mem=8MB\n",
            &[],
        ),
        (
            "    command: postgres -N 37 -c work_mem=8MB -c port=5999\n",
            &[],
        ),
        (
            "    command: postgres -c config_file=/etc/postgresql/postgresql.conf -c max_connections=37\n    \
             volumes: [\"./pg.conf:/etc/postgresql/postgresql.conf:ro\"]\n",
            &[(
                "pg.conf",
                "# comment\nwork_mem = '8MB'  # inline\nmax_connections = 5\nlisten_addresses = '*'\n",
            )],
        ),
        (
            "    command: postgres -c config_file=/etc/postgresql/postgresql.conf -c max_connections=37\n    \
             volumes:\n      - type: bind\n        source: ./conf\n        target: /etc/postgresql\n",
            &[("conf/postgresql.conf", "work_mem = 8MB\n")],
        ),
    ];
    for (body, files) in table {
        let plan = plan_of(&service(body), files);
        assert_eq!(
            key(&plan, "max_connections").as_deref(),
            Some("37"),
            "{body}: {plan:?}"
        );
        assert_eq!(
            key(&plan, "work_mem").as_deref(),
            Some("8MB"),
            "{body}: {plan:?}"
        );
        for own in ["port", "listen_addresses", "config_file"] {
            assert!(
                !plan.server.iter().any(|e| e.key == own),
                "{body}: {own} in {plan:?}"
            );
        }
    }
    let plan = plan_of(&service("    command: bash -c 'sleep 1'\n"), &[]);
    assert!(plan.server.is_empty(), "{plan:?}");
    assert!(
        plan.not_carried.iter().any(|n| n.contains("bash")),
        "{plan:?}"
    );
}

#[test]
fn volumes_short_and_long_give_init_dir_and_data_from() {
    let with_cluster: &[(&str, &str)] = &[
        ("pgdata/PG_VERSION", "16\n"),
        ("init/01.sql", "select 1;\n"),
    ];
    for body in [
        "    volumes:\n      - ./init:/docker-entrypoint-initdb.d:ro\n      - ./pgdata:/var/lib/postgresql/data\n",
        "    volumes:\n      - type: bind\n        source: ./init\n        target: /docker-entrypoint-initdb.d\n        \
         read_only: true\n      - type: bind\n        source: ./pgdata\n        target: /var/lib/postgresql/data\n",
        "    environment:\n      PGDATA: /pg/data\n    volumes:\n      - ./init/:/docker-entrypoint-initdb.d/\n      - ./pgdata:/pg/data\n",
    ] {
        let plan = plan_of(&service(body), with_cluster);
        assert_eq!(
            key(&plan, "init_dir").as_deref(),
            Some("init"),
            "{body}: {plan:?}"
        );
        assert_eq!(
            key(&plan, "data_from").as_deref(),
            Some("pgdata"),
            "{body}: {plan:?}"
        );
    }
    // A volume on /var/lib/postgresql: the cluster is its data/ below.
    let plan = plan_of(
        &service("    volumes: [\"./pg:/var/lib/postgresql\"]\n"),
        &[("pg/data/PG_VERSION", "16\n")],
    );
    assert_eq!(
        key(&plan, "data_from").as_deref(),
        Some("pg/data"),
        "{plan:?}"
    );
    // An empty bind mount: nothing to take over.
    let plan = plan_of(
        &service("    volumes: [\"./empty:/var/lib/postgresql/data\"]\n"),
        &[("empty/.keep", "")],
    );
    assert_eq!(key(&plan, "data_from"), None, "{plan:?}");
    assert!(
        plan.handled.iter().any(|h| h.contains("no cluster yet")),
        "{plan:?}"
    );
    // A named volume this host cannot show: its docker path and --data-from are named.
    let plan = plan_of(
        "name: shop\nservices:\n  db:\n    image: postgres:16\n    volumes: [\"pgdata:/var/lib/postgresql/data\"]\nvolumes:\n  pgdata:\n",
        &[],
    );
    assert_eq!(key(&plan, "data_from"), None, "{plan:?}");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.contains("/var/lib/docker/volumes/shop_pgdata/_data")
                && a.contains("--data-from")),
        "{plan:?}"
    );
    let plan = plan_of(
        "services:\n  db:\n    image: postgres:16\n    volumes:\n      - type: volume\n        source: data\n        \
         target: /var/lib/postgresql/data\nvolumes:\n  data:\n    external: true\n    name: legacy_pg\n",
        &[],
    );
    assert!(
        plan.actions
            .iter()
            .any(|a| a.contains("/var/lib/docker/volumes/legacy_pg/_data")),
        "{plan:?}"
    );
}

#[test]
fn images_of_every_16_spelling_are_taken_and_other_majors_refused() {
    for image in [
        "postgres:16",
        "postgres:16.4",
        "postgres:16-bookworm",
        "postgres:16-alpine",
        "postgres:16.4-alpine3.20",
        "docker.io/library/postgres:16",
        "library/postgres:16",
        "postgres:16@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "docker.io/library/postgres:16@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(
            map::postgres_image(image).map(|(_, m)| m),
            Some(Some(16)),
            "{image}"
        );
        plan_of(&format!("services:\n  db:\n    image: {image}\n"), &[]);
    }
    for image in ["nginx", "postgis/postgis:16-3.4", "mypostgres:16"] {
        assert_eq!(map::postgres_image(image), None, "{image}");
    }
    let err = refusal("services:\n  db:\n    image: postgres:15\n", &[]);
    assert!(
        err.contains("PostgreSQL 15") && err.contains("pgwarden upgrade"),
        "{err}"
    );
    let err = refusal("services:\n  db:\n    image: postgres\n", &[]);
    assert!(err.contains("latest"), "{err}");
}

#[test]
fn several_postgres_services_need_service_and_are_listed() {
    let yaml = "services:\n  main:\n    image: postgres:16\n  replica:\n    image: postgres:16-alpine\n  web:\n    image: nginx\n";
    let err = refusal(yaml, &[]);
    assert!(
        err.contains("--service") && err.contains("main (postgres:16)") && err.contains("replica"),
        "{err}"
    );
    let (_dir, file) = project(yaml, &[]);
    let plan = super::plan(&file, Some("replica"), &env).unwrap();
    assert_eq!(plan.service, "replica");
    let err = super::plan(&file, Some("web"), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not run the postgres image"), "{err}");
}

#[test]
fn other_keys_are_summarised_as_handled_or_not_carried_over() {
    let plan = plan_of(
        &service(
            "    healthcheck:\n      test: [CMD, pg_isready]\n    restart: always\n    shm_size: 1g\n    \
             container_name: pg\n    networks: [back]\n    environment:\n      TZ: UTC\n",
        ),
        &[],
    );
    for handled in ["healthcheck", "restart", "shm_size"] {
        assert!(
            plan.handled.iter().any(|h| h.starts_with(handled)),
            "{handled}: {plan:?}"
        );
    }
    for not in ["container_name", "networks", "environment TZ"] {
        assert!(
            plan.not_carried.iter().any(|n| n.starts_with(not)),
            "{not}: {plan:?}"
        );
    }
}
