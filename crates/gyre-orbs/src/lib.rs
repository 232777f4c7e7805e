//! Orb sources backed by the file system.
//!
//! [`DirOrbSource`] reads a directory laid out as `DIR/<namespace>/<name>/<version>.yml`
//! (packed orbs, one file per version) and/or `DIR/<namespace>/<name>/src/@orb.yml`
//! (an unpacked orb source tree, packed on load; its version comes from
//! `DIR/<namespace>/<name>/VERSION` when present).

use gyre_config::{OrbError, OrbSource, OrbText, OrbVersion, UnpackedFile};
use std::fs;
use std::path::{Path, PathBuf};

/// Version reported for an unpacked orb without a `VERSION` file.
pub const UNVERSIONED: &str = "unversioned";

/// Largest orb file read, to keep a stray binary from being loaded.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Orbs in a local directory.
#[derive(Clone, Debug)]
pub struct DirOrbSource {
    root: PathBuf,
}

impl DirOrbSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirOrbSource { root: root.into() }
    }

    fn orb_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }

    fn unpacked_version(dir: &Path) -> OrbVersion {
        fs::read_to_string(dir.join("VERSION"))
            .ok()
            .and_then(|v| OrbVersion::parse(&v))
            .unwrap_or_else(|| OrbVersion::Dev(UNVERSIONED.into()))
    }
}

fn unreadable(orb: String, e: std::io::Error) -> OrbError {
    OrbError::Unreadable {
        orb,
        reason: e.to_string(),
    }
}

impl OrbSource for DirOrbSource {
    fn versions(&self, namespace: &str, name: &str) -> Result<Vec<OrbVersion>, OrbError> {
        let orb = format!("{namespace}/{name}");
        // Names were validated by the compiler (`[a-z][a-z0-9_-]*`), so no path tricks.
        let dir = self.orb_dir(namespace, name);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OrbError::NotFound(orb));
            }
            Err(e) => return Err(unreadable(orb, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| unreadable(orb.clone(), e))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(v) = file
                .strip_suffix(".yml")
                .or_else(|| file.strip_suffix(".yaml"))
                && let Some(v) = OrbVersion::parse(v)
            {
                out.push(v);
            }
        }
        if dir.join("src").join("@orb.yml").is_file() {
            let v = Self::unpacked_version(&dir);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out.sort();
        Ok(out)
    }

    fn load(&self, namespace: &str, name: &str, version: &OrbVersion) -> Result<OrbText, OrbError> {
        let orb = format!("{namespace}/{name}@{version}");
        let dir = self.orb_dir(namespace, name);
        for ext in ["yml", "yaml"] {
            let packed = dir.join(format!("{version}.{ext}"));
            if packed.is_file() {
                let text = read_text(&packed).map_err(|e| unreadable(orb.clone(), e))?;
                return Ok(OrbText::Packed {
                    name: packed.display().to_string(),
                    text,
                });
            }
        }
        let src = dir.join("src");
        if src.join("@orb.yml").is_file() && Self::unpacked_version(&dir) == *version {
            let mut files = Vec::new();
            collect(&src, &src, &mut files).map_err(|e| unreadable(orb.clone(), e))?;
            return Ok(OrbText::Unpacked { files });
        }
        Err(OrbError::NotFound(orb))
    }
}

fn read_text(path: &Path) -> std::io::Result<String> {
    let meta = fs::metadata(path)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    fs::read_to_string(path)
}

/// Reads every text file below `dir` (relative paths use `/`).
fn collect(base: &Path, dir: &Path, out: &mut Vec<UnpackedFile>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(base, &path, out)?;
        } else if kind.is_file() {
            let Ok(text) = read_text(&path) else {
                continue; // binary or unreadable helper files cannot be included anyway
            };
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(UnpackedFile {
                path: rel,
                display: path.display().to_string(),
                text,
            });
        }
    }
    Ok(())
}

/// Packs an unpacked orb directory (`DIR` holding `@orb.yml`, or `DIR/src/@orb.yml`).
pub fn read_unpacked(dir: &Path) -> std::io::Result<Vec<UnpackedFile>> {
    let src = if dir.join("@orb.yml").is_file() {
        dir.to_path_buf()
    } else {
        dir.join("src")
    };
    if !src.join("@orb.yml").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no @orb.yml in {} or {}", dir.display(), src.display()),
        ));
    }
    let mut files = Vec::new();
    collect(&src, &src, &mut files)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_and_unpacked_versions() {
        let dir = tempfile::tempdir().unwrap();
        let orb = dir.path().join("acme").join("tools");
        fs::create_dir_all(orb.join("src/commands")).unwrap();
        fs::write(orb.join("1.0.0.yml"), "version: 2.1\n").unwrap();
        fs::write(orb.join("src/@orb.yml"), "version: 2.1\n").unwrap();
        fs::write(
            orb.join("src/commands/hi.yml"),
            "steps: [{run: <<include(x.sh)>>}]\n",
        )
        .unwrap();
        fs::write(orb.join("src/x.sh"), "echo hi\n").unwrap();
        fs::write(orb.join("VERSION"), "v2.3.4\n").unwrap();
        let src = DirOrbSource::new(dir.path());
        let versions = src.versions("acme", "tools").unwrap();
        assert_eq!(
            versions,
            vec![OrbVersion::Release(1, 0, 0), OrbVersion::Release(2, 3, 4)]
        );
        match src
            .load("acme", "tools", &OrbVersion::Release(2, 3, 4))
            .unwrap()
        {
            OrbText::Unpacked { files } => {
                let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                assert_eq!(paths, ["@orb.yml", "commands/hi.yml", "x.sh"]);
            }
            other => panic!("expected unpacked, got {other:?}"),
        }
        assert!(matches!(
            src.versions("acme", "nope"),
            Err(OrbError::NotFound(_))
        ));
    }
}
