//! Password hashes of local users: PBKDF2-HMAC-SHA256 (RFC 8018) with a random 16-byte
//! salt, stored as `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`. Pure but for the
//! salt.

use crate::auth::same_token;
use hmac::{KeyInit, Mac};

/// Iterations of new hashes (OWASP's figure for PBKDF2-HMAC-SHA256 is 600,000; this is
/// what a sign-in can afford on a small server without a worker pool).
pub const ITERATIONS: u32 = 210_000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// PBKDF2-HMAC-SHA256 of `password` with `salt`: 32 bytes.
pub fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = HmacSha256::new_from_slice(password).expect("HMAC takes any key length");
    // One block (32 bytes): U1 = PRF(P, S || INT(1)), Ui = PRF(P, Ui-1), T = xor of all.
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// A new hash of `password`.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    encode(password, &salt, ITERATIONS)
}

fn encode(password: &str, salt: &[u8], iterations: u32) -> String {
    let h = pbkdf2(password.as_bytes(), salt, iterations);
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        hex::encode(salt),
        hex::encode(h)
    )
}

/// Whether `password` matches `stored` (constant-time comparison; `false` for a hash it
/// cannot read).
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(n), Some(salt), Some(_), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(n), Ok(salt)) = (n.parse::<u32>(), hex::decode(salt)) else {
        return false;
    };
    if n == 0 || n > 10_000_000 {
        return false;
    }
    same_token(&encode(password, &salt, n), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vectors() {
        // PBKDF2-HMAC-SHA256 test vectors (RFC 7914 §11 uses the same construction).
        for (password, salt, n, want) in [
            (
                "password",
                "salt",
                1,
                "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
            ),
            (
                "password",
                "salt",
                2,
                "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
            ),
            (
                "password",
                "salt",
                4096,
                "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
            ),
        ] {
            assert_eq!(
                hex::encode(pbkdf2(password.as_bytes(), salt.as_bytes(), n)),
                want,
                "{password} {salt} {n}"
            );
        }
    }

    #[test]
    fn hashes_verify_and_differ() {
        let a = encode("correct horse", b"0123456789abcdef", 10);
        assert!(verify("correct horse", &a));
        assert!(!verify("correct horsE", &a));
        assert!(!verify("correct horse", "pbkdf2-sha256$10$zz$00"));
        assert!(!verify("x", "plain"));
        assert!(!verify("x", "pbkdf2-sha256$0$00$00"));
        assert_ne!(hash("p"), hash("p"));
    }
}
