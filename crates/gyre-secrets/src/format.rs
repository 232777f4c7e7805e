//! The sealed format (version 1) and the AES-256-GCM helpers. See the crate docs for the
//! layout.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

/// The first bytes of every sealed secret.
pub(crate) const MAGIC: &[u8; 3] = b"gys";
/// The current (and only) format version.
pub(crate) const VERSION: u8 = 1;
/// Bytes of a data key or the local master key (AES-256).
pub(crate) const KEY_LEN: usize = 32;
/// Bytes of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;
/// Magic, version, kind, wrapped key length.
const FIXED_HEADER_LEN: usize = MAGIC.len() + 1 + 1 + 2;

/// Which master key wrapped the data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// AES-256-GCM under the local master key.
    Local = 1,
    /// Vault/OpenBao transit.
    Transit = 2,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Transit => "transit",
        }
    }
}

/// A parsed sealed secret, borrowing from the input.
pub(crate) struct Sealed<'a> {
    pub(crate) kind: Kind,
    /// Everything before the nonce: the AAD of the payload.
    pub(crate) header: &'a [u8],
    pub(crate) wrapped_key: &'a [u8],
    pub(crate) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub(crate) ciphertext: &'a [u8],
}

/// The bytes the local wrapper binds into its AAD: magic, version and kind.
pub(crate) fn kind_prefix(kind: Kind) -> [u8; 5] {
    let [a, b, c] = *MAGIC;
    [a, b, c, VERSION, kind as u8]
}

/// Seals `plaintext` under `data_key` with a fresh nonce; `wrapped_key` is stored beside it.
/// `context` (not stored) is authenticated with the header: opening needs the same bytes.
pub(crate) fn encode(
    kind: Kind,
    wrapped_key: &[u8],
    data_key: &[u8; KEY_LEN],
    plaintext: &[u8],
    context: &[u8],
) -> Result<Vec<u8>> {
    let wrapped_len = u16::try_from(wrapped_key.len()).map_err(|_| Error::Malformed {
        reason: "wrapped data key longer than 65535 bytes",
    })?;
    let mut out = Vec::with_capacity(
        FIXED_HEADER_LEN + wrapped_key.len() + NONCE_LEN + plaintext.len() + TAG_LEN,
    );
    out.extend_from_slice(&kind_prefix(kind));
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(wrapped_key);
    let header_len = out.len();
    let nonce = random_nonce()?;
    let aad = [&out[..header_len], context].concat();
    let ciphertext = aead_encrypt(&cipher(data_key), &nonce, plaintext, &aad)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Parses the layout; authenticates nothing (that is [`open_payload`]'s job).
pub(crate) fn decode(sealed: &[u8]) -> Result<Sealed<'_>> {
    let malformed = |reason| Error::Malformed { reason };
    if sealed.len() < MAGIC.len() || &sealed[..MAGIC.len()] != MAGIC {
        return Err(malformed(
            "it does not start with the gyre secret magic bytes",
        ));
    }
    let version = *sealed
        .get(MAGIC.len())
        .ok_or(malformed("truncated header"))?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion { version });
    }
    if sealed.len() < FIXED_HEADER_LEN {
        return Err(malformed("truncated header"));
    }
    let kind = match sealed[MAGIC.len() + 1] {
        1 => Kind::Local,
        2 => Kind::Transit,
        _ => return Err(malformed("unknown wrapper kind")),
    };
    let wrapped_len =
        u16::from_be_bytes([sealed[FIXED_HEADER_LEN - 2], sealed[FIXED_HEADER_LEN - 1]]) as usize;
    let header_len = FIXED_HEADER_LEN + wrapped_len;
    if sealed.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(malformed("truncated"));
    }
    let (header, rest) = sealed.split_at(header_len);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Sealed {
        kind,
        header,
        wrapped_key: &header[FIXED_HEADER_LEN..],
        nonce: nonce.try_into().expect("split at NONCE_LEN"),
        ciphertext,
    })
}

/// Opens the payload of a parsed secret with its unwrapped data key and the `context` it
/// was sealed with; `None` when authentication fails.
pub(crate) fn open_payload(
    sealed: &Sealed<'_>,
    data_key: &[u8; KEY_LEN],
    context: &[u8],
) -> Option<Vec<u8>> {
    let aad = [sealed.header, context].concat();
    aead_decrypt(&cipher(data_key), &sealed.nonce, sealed.ciphertext, &aad)
}

/// A fresh random AES-256 key.
pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut()).map_err(Error::Random)?;
    Ok(key)
}

/// A fresh random 96-bit nonce (keys are single-use for payloads, so random is plenty).
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(Error::Random)?;
    Ok(nonce)
}

/// An AES-256-GCM cipher for `key` (its round keys are zeroized on drop; the key is not
/// copied).
pub(crate) fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("AES-256 keys are 32 bytes")
}

/// AES-256-GCM encryption; the output is ciphertext followed by the tag.
pub(crate) fn aead_encrypt(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Only for inputs beyond GCM's 64 GiB limit.
        .map_err(|_| Error::Malformed {
            reason: "plaintext too long for AES-GCM",
        })
}

/// AES-256-GCM decryption; `None` when authentication fails.
pub(crate) fn aead_decrypt(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}
