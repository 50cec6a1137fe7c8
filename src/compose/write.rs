//! A [`Plan`] → the text of `pgwarden.toml`, written atomically and never over an existing file.

use super::map::{Entry, Plan};
use crate::config::project::FILE_NAME;
use crate::error::{Error, IoContext, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file's text: a header, then each key under its comment, then `[server]`.
pub fn render(plan: &Plan) -> String {
    let mut text = format!(
        "# pgwarden.toml, written by `pgwarden init --from-compose` from the service {:?} of\n\
         # {}. Same keys as config.example.toml; relative paths are taken from this file's\n\
         # directory. Environment variables (POSTGRES_*, PGWARDEN_*) and flags override it.\n",
        plan.service,
        plan.compose_file.display()
    );
    for action in &plan.actions {
        text.push('\n');
        text.push_str(&comment(&format!("TO DO: {action}")));
    }
    for entry in &plan.keys {
        text.push('\n');
        text.push_str(&key_line(entry));
    }
    if !plan.server.is_empty() {
        text.push_str("\n[server]\n");
        for entry in &plan.server {
            text.push_str(&key_line(entry));
        }
    }
    text
}

fn key_line(entry: &Entry) -> String {
    let key = if entry
        .key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        entry.key.clone()
    } else {
        toml::Value::String(entry.key.clone()).to_string()
    };
    format!("{}{key} = {}\n", comment(&entry.comment), entry.value)
}

/// `text` as `# ` lines of at most about 100 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + word.len() > 98 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Where the file goes: beside the compose file.
pub fn target(compose_dir: &Path) -> PathBuf {
    compose_dir.join(FILE_NAME)
}

/// Refuses before anything is read further when `path` exists.
pub fn refuse_existing(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(exists(path));
    }
    Ok(())
}

fn exists(path: &Path) -> Error {
    Error::Config {
        problems: vec![format!(
            "{} already exists; pgwarden init never overwrites it\n    \
             help: remove or rename it first to write it from the compose file again, or edit it",
            path.display()
        )],
    }
}

/// Writes `text` to `path` (mode 0644) through a temporary file in the same directory, linked
/// into place only if no file has that name meanwhile.
pub fn write(path: &Path, text: &str) -> Result<()> {
    // The text must be a TOML file before it is one.
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(Error::Config {
            problems: vec![format!(
                "the pgwarden.toml made from the compose file is not valid TOML ({e}); nothing was \
                 written\n    help: this is a bug in pgwarden; please report it with the compose file"
            )],
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".pgwarden.toml.")
        .tempfile_in(dir)
        .io("cannot create a temporary file in", dir)?;
    // 0644 whatever the umask: a project file others can write is refused when found.
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .io("cannot set the mode of", temp.path())?;
    temp.write_all(text.as_bytes())
        .io("cannot write", temp.path())?;
    temp.as_file().sync_all().io("cannot sync", temp.path())?;
    temp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists(path)
        } else {
            Error::ConfigRead {
                path: path.to_path_buf(),
                source: e.error,
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_sits_under_its_comment_and_the_text_is_toml() {
        let plan = Plan {
            compose_file: PathBuf::from("/p/compose.yaml"),
            service: "db".into(),
            keys: vec![Entry {
                key: "port".into(),
                value: toml::Value::Integer(5433),
                comment: "ports: published".into(),
            }],
            server: vec![Entry {
                key: "max_connections".into(),
                value: toml::Value::String("37".into()),
                comment: "command: -c".into(),
            }],
            actions: vec!["password: set it".into()],
            ..Plan::default()
        };
        let text = render(&plan);
        assert!(text.contains("# ports: published\nport = 5433\n"), "{text}");
        assert!(
            text.contains("[server]\n# command: -c\nmax_connections = \"37\"\n"),
            "{text}"
        );
        assert!(text.contains("# TO DO: password: set it\n"), "{text}");
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["port"].as_integer(), Some(5433));
    }
}
