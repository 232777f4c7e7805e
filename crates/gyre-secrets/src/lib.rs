//! Secrets for gyre: project environment variables and contexts are sealed at rest with
//! envelope encryption. One API, [`Secrets`], over two master keys: a local 32-byte key
//! file (the embedded default) and Vault's or OpenBao's transit engine (production).
//!
//! ```no_run
//! # async fn demo() -> gyre_secrets::Result<()> {
//! let secrets = gyre_secrets::Secrets::local("/var/lib/gyre/master.key".as_ref())?;
//! let sealed = secrets.seal(b"hunter2").await?;
//! assert_eq!(secrets.open(&sealed).await?, b"hunter2");
//! # Ok(()) }
//! ```
//!
//! # Envelope encryption
//!
//! Each [`Secrets::seal`] draws a fresh random 256-bit *data key* and a random 96-bit
//! nonce, encrypts the plaintext with AES-256-GCM under the data key, and stores the data
//! key *wrapped* by the master key next to the ciphertext:
//!
//! - **local**: the data key is encrypted with AES-256-GCM under the master key (its own
//!   random nonce; AAD: the magic, version and kind bytes). The master key file holds
//!   exactly 32 random bytes, is created with mode 0600 when missing, and is refused when
//!   group or others may access it.
//! - **transit**: the data key is sent (base64) to `POST /v1/{mount}/encrypt/{key}`; the
//!   returned `vault:vN:…` ciphertext is stored. Opening calls `/decrypt/{key}`, so values
//!   sealed before a key rotation still open. The master key never leaves Vault.
//!
//! # Sealed format, version 1
//!
//! | offset    | bytes | field                                                      |
//! |-----------|-------|------------------------------------------------------------|
//! | 0         | 3     | magic `gys`                                                |
//! | 3         | 1     | format version, `1`                                        |
//! | 4         | 1     | wrapper kind: `1` local, `2` transit                       |
//! | 5         | 2     | `n`, length of the wrapped data key, big-endian            |
//! | 7         | n     | wrapped data key (local: nonce ‖ key ‖ tag, 60 bytes; transit: `vault:vN:…` text) |
//! | 7 + n     | 12    | nonce of the payload                                       |
//! | 19 + n    | ≥ 16  | payload: AES-256-GCM ciphertext ‖ 16-byte tag              |
//!
//! Bytes `0 .. 7 + n` (the whole header, wrapped key included), followed by the caller's
//! context for [`Secrets::seal_for`] (empty for [`Secrets::seal`]; not stored), are the
//! payload's associated data: changing any byte of a sealed value makes [`Secrets::open`]
//! fail, and a value bound to one context does not open under another.
//! `open` never panics: garbage, truncated or altered input is an [`Error`], and a value
//! sealed by the other kind of master key is [`Error::WrongWrapper`], naming both.
//!
//! Errors and `Debug` output never contain plaintext, data keys, the master key or the
//! Vault token.

mod error;
mod format;
mod local;
mod transit;

pub use error::{Error, Result};

/// A value opened by [`Secrets::open_for`].
pub struct Opened {
    pub plaintext: Vec<u8>,
    /// Sealed without a context (by [`Secrets::seal`]): it would open under any context.
    pub unbound: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext", &"<redacted>")
            .field("unbound", &self.unbound)
            .finish()
    }
}

use format::Kind;
use local::LocalKey;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use transit::Transit;

/// Seals and opens secrets (project environment variables, contexts).
///
/// Cheap to clone: clones share the master key or the transit client.
#[derive(Clone)]
pub struct Secrets {
    wrapper: Arc<Wrapper>,
}

/// The master key: a closed set of wrappers.
enum Wrapper {
    /// Boxed: the expanded AES key schedule is large.
    Local(Box<LocalKey>),
    Transit(Transit),
}

impl Secrets {
    /// Local master key kept in `path`: 32 random bytes, created with mode 0600 (and its
    /// parent directories) when missing. A file of another size, not a regular file, or
    /// with any group or other permission bit is refused with an error naming the file.
    pub fn local(path: &Path) -> Result<Secrets> {
        let key = LocalKey::load_or_create(path)?;
        Ok(Secrets::from(Wrapper::Local(Box::new(key))))
    }

    /// Vault/OpenBao transit: `addr` like `http://127.0.0.1:8200`, a `token`, and the
    /// transit key name. The engine's mount path is `transit` unless
    /// [`with_mount`](Self::with_mount) changes it. No request is made yet; creating the
    /// key is the operator's job, or [`ensure_key`](Self::ensure_key)'s.
    ///
    /// # Security
    /// Use `https://` for anything but a loopback address: data keys travel to Vault and
    /// back in the request bodies.
    pub fn transit(addr: &str, token: &str, key: &str) -> Result<Secrets> {
        Ok(Secrets::from(Wrapper::Transit(Transit::new(
            addr, token, key,
        )?)))
    }

    /// Sets the transit engine's mount path (default `transit`; may be nested, like
    /// `gyre/transit`). A local `Secrets` is returned unchanged.
    pub fn with_mount(self, mount: &str) -> Result<Secrets> {
        match &*self.wrapper {
            Wrapper::Local(_) => Ok(self),
            Wrapper::Transit(transit) => {
                let mut transit = transit.clone();
                transit.set_mount(mount)?;
                Ok(Secrets::from(Wrapper::Transit(transit)))
            }
        }
    }

    /// Transit: creates the key (type `aes256-gcm96`) if it does not exist. Local: does
    /// nothing (the key file exists once [`local`](Self::local) returned).
    pub async fn ensure_key(&self) -> Result<()> {
        match &*self.wrapper {
            Wrapper::Local(_) => Ok(()),
            Wrapper::Transit(transit) => transit.ensure_key().await,
        }
    }

    /// Seals `plaintext` under a fresh data key wrapped by the master key (see the crate
    /// docs for the format). Sealing the same plaintext twice gives different bytes.
    pub async fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal_for(b"", plaintext).await
    }

    /// Seals `plaintext` bound to `context`, what the value belongs to (e.g. a project and a
    /// variable name): it opens only with [`open_for`](Self::open_for) and the same
    /// context, so a sealed value copied to another row does not open there. The context is
    /// authenticated, not stored.
    pub async fn seal_for(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let data_key = format::random_key()?;
        let (kind, wrapped) = match &*self.wrapper {
            Wrapper::Local(key) => (Kind::Local, key.wrap(&data_key)?),
            Wrapper::Transit(transit) => (Kind::Transit, transit.wrap(&data_key).await?),
        };
        format::encode(kind, &wrapped, &data_key, plaintext, context)
    }

    /// Opens what [`seal`](Self::seal) returned, with the same master key. Fails, without
    /// panicking, on anything else: garbage, altered bytes, another master key, or a value
    /// sealed by the other kind of wrapper ([`Error::WrongWrapper`]).
    pub async fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let data_key = self.data_key(sealed).await?;
        let parsed = format::decode(sealed)?;
        format::open_payload(&parsed, &data_key, b"").ok_or_else(|| self.decrypt_error())
    }

    /// Opens what [`seal_for`](Self::seal_for) sealed with the same `context`. A value
    /// [`seal`](Self::seal)ed without one (before its owner bound its values) also opens,
    /// flagged [`Opened::unbound`], so the owner can seal it again bound; a value bound to
    /// another context is [`Error::Decrypt`].
    pub async fn open_for(&self, context: &[u8], sealed: &[u8]) -> Result<Opened> {
        let data_key = self.data_key(sealed).await?;
        let parsed = format::decode(sealed)?;
        if let Some(plaintext) = format::open_payload(&parsed, &data_key, context) {
            return Ok(Opened {
                plaintext,
                unbound: false,
            });
        }
        match format::open_payload(&parsed, &data_key, b"") {
            Some(plaintext) if !context.is_empty() => Ok(Opened {
                plaintext,
                unbound: true,
            }),
            _ => Err(self.decrypt_error()),
        }
    }

    /// The data key of a sealed value, unwrapped by the master key.
    async fn data_key(&self, sealed: &[u8]) -> Result<zeroize::Zeroizing<[u8; format::KEY_LEN]>> {
        let parsed = format::decode(sealed)?;
        let data_key = match (&*self.wrapper, parsed.kind) {
            (Wrapper::Local(key), Kind::Local) => key
                .unwrap(parsed.wrapped_key)?
                .ok_or_else(|| self.decrypt_error())?,
            (Wrapper::Transit(transit), Kind::Transit) => {
                transit.unwrap(parsed.wrapped_key).await?
            }
            (_, sealed_by) => {
                return Err(Error::WrongWrapper {
                    sealed_by: sealed_by.name(),
                    opener: self.describe(),
                });
            }
        };
        Ok(data_key)
    }

    /// `local` or `transit:<key>`: recorded so an operator sees what sealed what.
    pub fn describe(&self) -> String {
        match &*self.wrapper {
            Wrapper::Local(_) => "local".to_owned(),
            Wrapper::Transit(transit) => format!("transit:{}", transit.key),
        }
    }

    fn decrypt_error(&self) -> Error {
        Error::Decrypt {
            wrapper: self.describe(),
        }
    }
}

impl From<Wrapper> for Secrets {
    fn from(wrapper: Wrapper) -> Secrets {
        Secrets {
            wrapper: Arc::new(wrapper),
        }
    }
}

/// Names the wrapper, never the key material or the token.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.wrapper {
            Wrapper::Local(_) => f
                .debug_struct("Secrets")
                .field("wrapper", &"local")
                .finish(),
            Wrapper::Transit(transit) => f
                .debug_struct("Secrets")
                .field("wrapper", &"transit")
                .field("addr", &transit.addr)
                .field("mount", &transit.mount)
                .field("key", &transit.key)
                .finish_non_exhaustive(),
        }
    }
}
