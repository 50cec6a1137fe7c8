//! How pgwarden reaches its administration role [`ADMIN_ROLE`] in a cluster it creates: one
//! line at the top of `pg_hba.conf`, `local all pgwarden_admin peer map=pgwarden`, and
//! `pg_ident.conf` mapping the OS users that run pgwarden (`root`, and the server's own user)
//! to it. Only connections asking for that role are affected; [`crate::supervisor::reconcile`] uses it.

use crate::config::ADMIN_ROLE;
use crate::error::{IoContext, Result};
use crate::os::privilege::RunAs;
use std::path::Path;

/// The pg_ident map name.
const MAP: &str = "pgwarden";

/// Writes the peer line for [`ADMIN_ROLE`] into a new cluster's `pg_hba.conf` and
/// `pg_ident.conf`.
pub fn grant_peer_access(data_dir: &Path, run_as: &RunAs) -> Result<()> {
    let hba_path = data_dir.join("pg_hba.conf");
    let hba = std::fs::read_to_string(&hba_path).io("cannot read", &hba_path)?;
    std::fs::write(&hba_path, with_admin_line(&hba)).io("cannot write", &hba_path)?;

    let ident_path = data_dir.join("pg_ident.conf");
    let mut ident = std::fs::read_to_string(&ident_path).io("cannot read", &ident_path)?;
    if !ident.ends_with('\n') && !ident.is_empty() {
        ident.push('\n');
    }
    ident.push_str(
        "\n# pgwarden: the OS users that run pgwarden may log in as its administration role.\n",
    );
    let mut users = vec!["root".to_string(), run_as.name.clone()];
    users.dedup();
    for user in users {
        ident.push_str(&format!("{MAP:<15} {user:<23} {ADMIN_ROLE}\n"));
    }
    std::fs::write(&ident_path, ident).io("cannot write", &ident_path)
}

/// `pg_hba.conf` with pgwarden's line before the first rule (the first matching line wins).
fn with_admin_line(hba: &str) -> String {
    let line = format!(
        "# pgwarden: its administration role, on the private Unix socket only, for the OS users\n\
         # named in pg_ident.conf (map {MAP}). Every other role uses the lines below.\n\
         local   all             {ADMIN_ROLE:<15} peer map={MAP}\n\n"
    );
    let mut out = String::with_capacity(hba.len() + line.len());
    let mut inserted = false;
    for l in hba.split_inclusive('\n') {
        let t = l.trim();
        if !inserted && !t.is_empty() && !t.starts_with('#') {
            out.push_str(&line);
            inserted = true;
        }
        out.push_str(l);
    }
    if !inserted {
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_line_goes_before_the_first_rule() {
        let hba = "# TYPE DATABASE USER ADDRESS METHOD\n\n# local\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let out = with_admin_line(hba);
        let rules: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(rules.len(), 3, "{out}");
        assert!(
            rules[0].starts_with("local   all             pgwarden_admin"),
            "{out}"
        );
        assert!(rules[0].ends_with("peer map=pgwarden"), "{out}");
        assert_eq!(rules[1], "local all all scram-sha-256");
    }
}
