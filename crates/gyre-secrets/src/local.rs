//! The local wrapper: a 32-byte master key in a file (mode 0600) wraps each data key with
//! AES-256-GCM.

use crate::error::{Error, Result};
use crate::format::{self, KEY_LEN, Kind, NONCE_LEN, TAG_LEN};
use aes_gcm::Aes256Gcm;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Bytes of a wrapped data key: nonce, encrypted key, tag.
pub(crate) const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// The loaded master key, as a ready cipher (its round keys are zeroized on drop).
pub(crate) struct LocalKey {
    cipher: Aes256Gcm,
}

impl LocalKey {
    /// Reads the key at `path`, or creates it (32 random bytes, mode 0600) when missing.
    pub(crate) fn load_or_create(path: &Path) -> Result<LocalKey> {
        if let Some(key) = read_key(path)? {
            return Ok(key);
        }
        let io_error = |source| Error::KeyFile {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let key = format::random_key()?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                file.write_all(key.as_ref())
                    .and_then(|()| file.sync_all())
                    .map_err(io_error)?;
                Ok(LocalKey::new(&key))
            }
            // Created by someone else since we looked: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path)?.ok_or_else(|| {
                io_error(std::io::Error::new(
                    ErrorKind::NotFound,
                    "key file vanished while being created",
                ))
            }),
            Err(e) => Err(io_error(e)),
        }
    }

    fn new(key: &[u8; KEY_LEN]) -> LocalKey {
        LocalKey {
            cipher: format::cipher(key),
        }
    }

    /// Wraps a data key: nonce ‖ AES-256-GCM(master key, data key, AAD = magic, version, kind).
    pub(crate) fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Result<Vec<u8>> {
        let nonce = format::random_nonce()?;
        let aad = format::kind_prefix(Kind::Local);
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&format::aead_encrypt(&self.cipher, &nonce, data_key, &aad)?);
        Ok(wrapped)
    }

    /// Unwraps a data key; `None` if the master key is not the one that wrapped it, or the
    /// bytes were altered.
    pub(crate) fn unwrap(&self, wrapped: &[u8]) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::Malformed {
                reason: "wrapped data key has the wrong length",
            });
        }
        let (nonce, encrypted) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let aad = format::kind_prefix(Kind::Local);
        let Some(key) = format::aead_decrypt(&self.cipher, &nonce, encrypted, &aad) else {
            return Ok(None);
        };
        let key = Zeroizing::new(key);
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        data_key.copy_from_slice(&key);
        Ok(Some(data_key))
    }
}

/// Reads and checks an existing key file; `None` if there is none.
fn read_key(path: &Path) -> Result<Option<LocalKey>> {
    let io_error = |source| Error::KeyFile {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(Error::KeyFileType {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(Error::KeyFileSize {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(key.as_mut()).map_err(io_error)?;
    Ok(Some(LocalKey::new(&key)))
}
