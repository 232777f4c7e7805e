//! The local master key: round trips, wrong keys, tampering, garbage, key file checks.

use gyre_secrets::{Error, Secrets};
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PLAINTEXT: &[u8] = b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn local(dir: &Path) -> Secrets {
    Secrets::local(&dir.join("master.key")).expect("local secrets")
}

/// The error of `open(sealed)`, as its message; panics if `open` succeeds.
fn open_err(secrets: &Secrets, sealed: &[u8]) -> Error {
    match rt().block_on(secrets.open(sealed)) {
        Ok(_) => panic!("opening {sealed:?} succeeded"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = local(dir.path());
    for plaintext in [
        &b""[..],
        b"x",
        PLAINTEXT,
        "ünïcødé 🔑".as_bytes(),
        &[0u8; 1 << 20],
    ] {
        let sealed = secrets.seal(plaintext).await.unwrap();
        assert_eq!(secrets.open(&sealed).await.unwrap(), plaintext);
    }
}

#[tokio::test]
async fn sealing_twice_gives_different_bytes_without_the_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = local(dir.path());
    let a = secrets.seal(PLAINTEXT).await.unwrap();
    let b = secrets.seal(PLAINTEXT).await.unwrap();
    assert_ne!(a, b);
    // Layout: magic, version 1, kind local, 60-byte wrapped key, 12-byte nonce, payload.
    assert_eq!(&a[..7], b"gys\x01\x01\x00\x3c");
    assert_eq!(a.len(), 7 + 60 + 12 + PLAINTEXT.len() + 16);
    assert!(!a.windows(8).any(|w| PLAINTEXT.windows(8).any(|p| p == w)));
}

#[tokio::test]
async fn the_key_file_persists_across_instances_and_clones() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = local(dir.path()).seal(PLAINTEXT).await.unwrap();
    let again = local(dir.path());
    assert_eq!(again.clone().open(&sealed).await.unwrap(), PLAINTEXT);
    assert_eq!(again.describe(), "local");
    assert_eq!(format!("{again:?}"), r#"Secrets { wrapper: "local" }"#);
}

#[test]
fn the_key_file_is_created_with_mode_0600_and_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/keys/master.key");
    Secrets::local(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    assert_ne!(std::fs::read(&path).unwrap(), [0u8; 32]);
}

#[tokio::test]
async fn another_key_cannot_open() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sealed = local(a.path()).seal(PLAINTEXT).await.unwrap();
    let err = local(b.path()).open(&sealed).await.unwrap_err();
    assert!(matches!(err, Error::Decrypt { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot open the secret: it was sealed with another local key, or it was altered"
    );
}

#[test]
fn changing_any_byte_or_truncating_fails() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = local(dir.path());
    let sealed = rt().block_on(secrets.seal(PLAINTEXT)).unwrap();
    for i in 0..sealed.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut tampered = sealed.clone();
            tampered[i] ^= flip;
            let err = open_err(&secrets, &tampered);
            let message = format!("{err} {err:?}");
            assert!(!message.contains("AWS_SECRET"), "byte {i}: {message}");
        }
    }
    for len in 0..sealed.len() {
        open_err(&secrets, &sealed[..len]);
    }
    let mut longer = sealed.clone();
    longer.push(0);
    open_err(&secrets, &longer);
}

#[test]
fn garbage_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = local(dir.path());
    let check = |input: &[u8], expect: &str| {
        assert_eq!(open_err(&secrets, input).to_string(), expect, "{input:?}");
    };
    let not_ours = "not a gyre sealed secret: it does not start with the gyre secret magic bytes";
    check(b"", not_ours);
    check(b"hunter2", not_ours);
    check(b"gys", "not a gyre sealed secret: truncated header");
    check(
        b"gys\x01\x01\x00",
        "not a gyre sealed secret: truncated header",
    );
    check(
        b"gys\x02\x01\x00\x00",
        "sealed secret has format version 2; this gyre reads version 1 only",
    );
    check(
        b"gys\x01\x07\x00\x00",
        "not a gyre sealed secret: unknown wrapper kind",
    );
    check(
        b"gys\x01\x01\x00\x3c",
        "not a gyre sealed secret: truncated",
    );
    check(
        &[&b"gys\x01\x01\x00\x01"[..], &[0; 40]].concat(),
        "not a gyre sealed secret: wrapped data key has the wrong length",
    );
    // A transit-sealed value (layout from the crate docs) opened with the local key.
    let transit = [&b"gys\x01\x02\x00\x0bvault:v1:AA"[..], &[0; 28]].concat();
    check(
        &transit,
        "this secret was sealed with the transit master key, but gyre is configured with local; \
         configure the transit key to open it",
    );
}

#[test]
fn bad_key_files_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, contents: &[u8], mode: u32, expect: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Secrets::local(&path).unwrap_err();
        let expect = expect.replace("PATH", &path.display().to_string());
        assert_eq!(err.to_string(), expect);
        // The key file was left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), contents);
    };
    let size = |n: usize| {
        format!(
            "master key file PATH holds {n} bytes, expected exactly 32; it is not a gyre master \
             key (restore the right file, or move it away to create a new key: secrets sealed \
             with the old key cannot be opened then)"
        )
    };
    check("empty", b"", 0o600, &size(0));
    check("short", &[7; 31], 0o600, &size(31));
    check("long", &[7; 33], 0o400, &size(33));
    let mode = |m: &str| {
        format!(
            "master key file PATH has mode {m}: group and others must have no access (run \
             `chmod 600` on it)"
        )
    };
    check("readable", &[7; 32], 0o644, &mode("0644"));
    check("group", &[7; 32], 0o640, &mode("0640"));
    check("other-write", &[7; 32], 0o602, &mode("0602"));

    let err = Secrets::local(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyFilePermissions { .. } | Error::KeyFileType { .. }
        ),
        "{err:?}"
    );
    let sub = dir.path().join("dir");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        Secrets::local(&sub).unwrap_err().to_string(),
        format!("master key file {} is not a regular file", sub.display())
    );
}

#[test]
fn a_good_existing_key_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    std::fs::write(&path, [42u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let sealed = rt()
        .block_on(Secrets::local(&path).unwrap().seal(PLAINTEXT))
        .unwrap();
    let copy = dir.path().join("copy.key");
    std::fs::copy(&path, &copy).unwrap();
    let opened = rt().block_on(Secrets::local(&copy).unwrap().open(&sealed));
    assert_eq!(opened.unwrap(), PLAINTEXT);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert!(rt().block_on(local(dir.path()).open(&bytes)).is_err());
    }

    #[test]
    fn bytes_behind_a_valid_header_never_open(
        kind in 0u8..4,
        len in any::<u16>(),
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![b'g', b'y', b's', 1, kind];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&rest);
        prop_assert!(rt().block_on(local(dir.path()).open(&bytes)).is_err());
    }

    #[test]
    fn round_trip(plaintext in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let secrets = local(dir.path());
        let rt = rt();
        let sealed = rt.block_on(secrets.seal(&plaintext)).unwrap();
        prop_assert_eq!(rt.block_on(secrets.open(&sealed)).unwrap(), plaintext);
    }

    #[test]
    fn mutated_seals_never_open(
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let secrets = local(dir.path());
        let rt = rt();
        let mut sealed = rt.block_on(secrets.seal(&plaintext)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (index, xor) in edits {
            let i = index.index(sealed.len());
            if seen.insert(i) {
                sealed[i] ^= xor;
            }
        }
        prop_assert!(rt.block_on(secrets.open(&sealed)).is_err());
    }
}

#[tokio::test]
async fn a_bound_value_opens_only_under_its_context() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = local(dir.path());
    let a = b"project-env-var:1:DEPLOY_KEY";
    let b = b"project-env-var:2:DEPLOY_KEY";
    let sealed = secrets.seal_for(a, PLAINTEXT).await.unwrap();
    let opened = secrets.open_for(a, &sealed).await.unwrap();
    assert_eq!(opened.plaintext, PLAINTEXT);
    assert!(!opened.unbound);
    // Copied to another row: refused, whether opened bound or not.
    for result in [
        secrets.open_for(b, &sealed).await.map(|o| o.plaintext),
        secrets.open_for(b"", &sealed).await.map(|o| o.plaintext),
        secrets.open(&sealed).await,
    ] {
        assert!(
            matches!(result, Err(Error::Decrypt { .. })),
            "{:?}",
            result.map(|_| "opened")
        );
    }
    // A value sealed before binding opens anywhere, and says so.
    let legacy = secrets.seal(PLAINTEXT).await.unwrap();
    let opened = secrets.open_for(b, &legacy).await.unwrap();
    assert_eq!(opened.plaintext, PLAINTEXT);
    assert!(opened.unbound);
    // The context is authenticated, not stored.
    assert_eq!(sealed.len(), legacy.len());
    assert!(!sealed.windows(a.len()).any(|w| w == a));
}
