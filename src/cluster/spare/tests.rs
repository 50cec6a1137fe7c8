use super::*;
use std::os::unix::fs::PermissionsExt;

fn origin(source: &Path) -> Origin {
    std::fs::create_dir_all(source).unwrap();
    std::fs::write(source.join("done"), "").unwrap();
    Origin::of("16.14.0".into(), source, &source.join("done"), 0).unwrap()
}

fn fill(from: &Path) -> impl FnOnce(&Path) -> Result<u64> + '_ {
    move |to: &Path| {
        std::fs::create_dir_all(to.join("base")).unwrap();
        std::fs::write(to.join("PG_VERSION"), "16\n").unwrap();
        let _ = from;
        Ok(3)
    }
}

#[test]
fn a_spare_is_taken_by_a_rename_once_and_only_for_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("template");
    let wanted = origin(&source);
    let spare = dir.path().join(".data.spare");
    let made = make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap();
    assert!(matches!(made, Made::Made(3)), "{made:?}");
    assert!(matches!(
        make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap(),
        Made::AlreadyThere
    ));
    let inode = std::fs::metadata(spare.join("cluster/PG_VERSION"))
        .unwrap()
        .ino();

    // Another origin (the template made again: a new completion file) is not taken.
    let mut other = wanted.clone();
    other.identity.push('x');
    let into = dir.path().join("staging");
    std::fs::create_dir(&into).unwrap();
    assert!(take(&spare, &other, &into, "cluster").is_none());
    assert!(!spare.exists(), "a stale spare is deleted");
    assert!(!into.join("PG_VERSION").exists());

    make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap();
    let inode = std::fs::metadata(spare.join("cluster/PG_VERSION"))
        .map(|m| m.ino())
        .unwrap_or(inode);
    let record = take(&spare, &wanted, &into, "cluster").expect("taken");
    assert_eq!(record.bytes, 3);
    assert_eq!(
        std::fs::metadata(into.join("PG_VERSION")).unwrap().ino(),
        inode,
        "a rename, not a copy"
    );
    assert!(!spare.exists());
    assert!(
        take(&spare, &wanted, &into, "cluster").is_none(),
        "taken once"
    );
}

#[test]
fn a_half_made_spare_is_never_taken_and_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("template");
    let wanted = origin(&source);
    let spare = dir.path().join(".data.spare");
    // A maker killed before the rename: its working directory only.
    let killed = spare.with_file_name(".data.spare.work-999999999");
    std::fs::create_dir_all(killed.join("cluster")).unwrap();
    let into = dir.path().join("staging");
    assert!(take(&spare, &wanted, &into, "cluster").is_none());
    // A spare directory without its marker (torn some other way) is not taken either.
    std::fs::create_dir_all(spare.join("cluster")).unwrap();
    std::fs::set_permissions(&spare, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(take(&spare, &wanted, &into, "cluster").is_none());
    assert!(!into.exists());
    // The next maker removes both and makes a whole one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while spare.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap();
    assert!(!killed.exists(), "a killed maker's work is swept");
    assert!(take(&spare, &wanted, &into, "cluster").is_some());
}

#[test]
fn a_cancelled_make_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("template");
    let wanted = origin(&source);
    let spare = dir.path().join(".data.spare");
    let cancel = Cancel::new();
    cancel.cancel();
    assert!(make(&spare, &wanted, fill(&source), &cancel).is_err());
    assert!(!spare.exists());
    assert!(!work_dir(&spare).exists());
}

#[test]
fn a_spare_writable_by_others_is_neither_taken_nor_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("template");
    let wanted = origin(&source);
    let spare = dir.path().join(".data.spare");
    make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap();
    std::fs::set_permissions(&spare, std::fs::Permissions::from_mode(0o777)).unwrap();
    let into = dir.path().join("staging");
    assert!(take(&spare, &wanted, &into, "cluster").is_none());
    assert!(spare.join("cluster/PG_VERSION").exists(), "not deleted");
    assert!(matches!(
        make(&spare, &wanted, fill(&source), &Cancel::never()).unwrap(),
        Made::Skipped(_)
    ));
    discard(&spare).unwrap();
    assert!(spare.exists(), "not pgwarden's own: left alone");
}
