//! Vault transit against a real OpenBao dev server (tests/support): round trips, key
//! rotation, wrong tokens, mounts, and mixing with the local key.

mod support;

use gyre_secrets::{Error, Secrets};
use support::Bao;

const PLAINTEXT: &[u8] = b"GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyz";

async fn transit(bao: &Bao, key: &str) -> Secrets {
    let secrets = Secrets::transit(&bao.addr, &bao.token, key).expect("transit secrets");
    secrets.ensure_key().await.expect("ensure_key");
    secrets
}

#[tokio::test]
async fn round_trips() {
    let bao = Bao::start().await;
    let secrets = transit(&bao, "gyre").await;
    secrets
        .ensure_key()
        .await
        .expect("ensure_key is idempotent");
    assert_eq!(secrets.describe(), "transit:gyre");
    let debug = format!("{secrets:?}");
    assert_eq!(
        debug,
        format!(
            r#"Secrets {{ wrapper: "transit", addr: "{}", mount: "transit", key: "gyre", .. }}"#,
            bao.addr
        )
    );
    assert!(!debug.contains(&bao.token));
    for plaintext in [&b""[..], PLAINTEXT, &[0xffu8; 100_000]] {
        let sealed = secrets.seal(plaintext).await.unwrap();
        assert_eq!(&sealed[..5], b"gys\x01\x02");
        assert!(sealed.windows(9).any(|w| w == b"vault:v1:"));
        assert_eq!(secrets.clone().open(&sealed).await.unwrap(), plaintext);
    }
    let a = secrets.seal(PLAINTEXT).await.unwrap();
    let b = secrets.seal(PLAINTEXT).await.unwrap();
    assert_ne!(a, b);
    // Bound to a context: opens under it only.
    let bound = secrets.seal_for(b"row:1", PLAINTEXT).await.unwrap();
    let opened = secrets.open_for(b"row:1", &bound).await.unwrap();
    assert_eq!(
        (opened.plaintext.as_slice(), opened.unbound),
        (PLAINTEXT, false)
    );
    assert!(matches!(
        secrets.open_for(b"row:2", &bound).await,
        Err(gyre_secrets::Error::Decrypt { .. })
    ));
}

#[tokio::test]
async fn values_sealed_before_a_rotation_still_open() {
    let bao = Bao::start().await;
    let secrets = transit(&bao, "rotating").await;
    let before = secrets.seal(PLAINTEXT).await.unwrap();
    bao.request("transit/keys/rotating/rotate", "{}").await;
    let after = secrets.seal(PLAINTEXT).await.unwrap();
    assert!(after.windows(9).any(|w| w == b"vault:v2:"));
    assert_eq!(secrets.open(&before).await.unwrap(), PLAINTEXT);
    assert_eq!(secrets.open(&after).await.unwrap(), PLAINTEXT);
}

#[tokio::test]
async fn a_wrong_token_is_denied_naming_the_address_not_the_token() {
    let bao = Bao::start().await;
    let sealed = transit(&bao, "gyre").await.seal(PLAINTEXT).await.unwrap();
    let wrong_token = "s.this-is-not-the-token";
    let wrong = Secrets::transit(&bao.addr, wrong_token, "gyre").unwrap();
    let errors = [
        ("read key", wrong.ensure_key().await.unwrap_err()),
        ("encrypt", wrong.seal(PLAINTEXT).await.unwrap_err()),
        ("decrypt", wrong.open(&sealed).await.unwrap_err()),
    ];
    for (op, err) in errors {
        assert!(
            matches!(err, Error::TransitDenied { status: 403, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "Vault transit {op} at {} was denied (HTTP 403): the token is invalid, expired \
                 or lacks a policy allowing it on key \"gyre\"",
                bao.addr
            )
        );
        let debug = format!("{err:?}");
        assert!(
            !debug.contains(wrong_token) && !debug.contains(&bao.token),
            "{debug}"
        );
    }
}

#[tokio::test]
async fn another_key_or_mount_cannot_open() {
    let bao = Bao::start().await;
    let sealed = transit(&bao, "one").await.seal(PLAINTEXT).await.unwrap();

    // A key that exists but did not seal it: Vault's decryption fails.
    let other = transit(&bao, "two").await;
    let err = other.open(&sealed).await.unwrap_err();
    assert!(
        matches!(err, Error::TransitStatus { status: 400, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("key \"two\" failed (HTTP 400)"),
        "{err}"
    );

    // The same key name on another mount is another key.
    bao.request("sys/mounts/gyre/transit", r#"{"type":"transit"}"#)
        .await;
    let mounted = Secrets::transit(&bao.addr, &bao.token, "one")
        .unwrap()
        .with_mount("/gyre/transit/")
        .unwrap();
    mounted.ensure_key().await.unwrap();
    assert!(format!("{mounted:?}").contains(r#"mount: "gyre/transit""#));
    assert!(mounted.open(&sealed).await.is_err());
    let sealed_there = mounted.seal(PLAINTEXT).await.unwrap();
    assert_eq!(mounted.open(&sealed_there).await.unwrap(), PLAINTEXT);

    // A mount that does not exist.
    let missing = Secrets::transit(&bao.addr, &bao.token, "one")
        .unwrap()
        .with_mount("nowhere")
        .unwrap();
    let err = missing.ensure_key().await.unwrap_err();
    assert!(
        matches!(err, Error::TransitStatus { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn changing_any_byte_fails() {
    let bao = Bao::start().await;
    let secrets = transit(&bao, "gyre").await;
    let sealed = secrets.seal(PLAINTEXT).await.unwrap();
    for i in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[i] ^= 0x01;
        let err = secrets.open(&tampered).await.unwrap_err();
        assert!(
            !format!("{err} {err:?}").contains("GITHUB_TOKEN"),
            "byte {i}: {err:?}"
        );
    }
    assert!(secrets.open(&sealed[..sealed.len() - 1]).await.is_err());
}

#[tokio::test]
async fn local_and_transit_values_do_not_mix() {
    let bao = Bao::start().await;
    let transit = transit(&bao, "gyre").await;
    let dir = tempfile::tempdir().unwrap();
    let local = Secrets::local(&dir.path().join("master.key")).unwrap();

    let sealed = transit.seal(PLAINTEXT).await.unwrap();
    let err = local.open(&sealed).await.unwrap_err();
    assert!(matches!(err, Error::WrongWrapper { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "this secret was sealed with the transit master key, but gyre is configured with local; \
         configure the transit key to open it"
    );

    let sealed = local.seal(PLAINTEXT).await.unwrap();
    assert_eq!(
        transit.open(&sealed).await.unwrap_err().to_string(),
        "this secret was sealed with the local master key, but gyre is configured with \
         transit:gyre; configure the local key to open it"
    );
}

#[tokio::test]
async fn an_unreachable_server_names_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let addr = format!("http://127.0.0.1:{port}");
    let secrets = Secrets::transit(&addr, "token", "gyre").unwrap();
    let err = secrets.seal(PLAINTEXT).await.unwrap_err();
    assert!(matches!(err, Error::TransitRequest { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("Vault transit request encrypt to {addr} failed")
    );
}

#[test]
fn bad_transit_configuration_is_refused() {
    let check = |addr: &str, token: &str, key: &str, expect: &str| {
        let err = Secrets::transit(addr, token, key).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid Vault transit configuration: {expect}")
        );
        assert!(!format!("{err:?}").contains("s3cr3t"));
    };
    check(
        "127.0.0.1:8200",
        "t",
        "k",
        r#"address "127.0.0.1:8200" is not a URL: relative URL without a base"#,
    );
    check(
        "ftp://h:8200",
        "t",
        "k",
        r#"address "ftp://h:8200/" must be http(s)://host[:port] with no credentials, query or fragment"#,
    );
    check(
        "not a url",
        "t",
        "k",
        r#"address "not a url" is not a URL: relative URL without a base"#,
    );
    check(
        "http://u:s3cr3t@h:8200",
        "t",
        "k",
        r#"address "http://u:REDACTED@h:8200/" must be http(s)://host[:port] with no credentials, query or fragment"#,
    );
    check(
        "http://h:8200",
        "t",
        "a/b",
        r#"key name "a/b" must be non-empty and use only letters, digits, `_`, `-` and `.`"#,
    );
    check(
        "http://h:8200",
        "t",
        "",
        r#"key name "" must be non-empty and use only letters, digits, `_`, `-` and `.`"#,
    );
    check(
        "http://h:8200",
        "s3cr3t\n",
        "k",
        "the token has characters not allowed in an HTTP header",
    );
    check("http://h:8200", "", "k", "the token is empty");
    let err = Secrets::transit("http://h:8200", "t", "k")
        .unwrap()
        .with_mount("a/../b")
        .unwrap_err();
    assert!(err.to_string().contains(r#"mount path "a/../b""#), "{err}");
}
