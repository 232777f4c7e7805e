//! Orb references, version pins, the [`OrbSource`] trait and orb packing (spec §7).
//!
//! The compiler asks an [`OrbSource`] which versions of an orb exist and for the text
//! of one of them; pin resolution (exact, `x.y`, `x`, `volatile`, `dev:label`, and the
//! closest-version fallback) happens here so every source behaves the same.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed registry reference `namespace/name@pin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrbRef {
    pub namespace: String,
    pub name: String,
    pub pin: Pin,
}

/// The version part of a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    Exact(u64, u64, u64),
    Minor(u64, u64),
    Major(u64),
    Volatile,
    Dev(String),
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Exact(a, b, c) => write!(f, "{a}.{b}.{c}"),
            Pin::Minor(a, b) => write!(f, "{a}.{b}"),
            Pin::Major(a) => write!(f, "{a}"),
            Pin::Volatile => f.write_str("volatile"),
            Pin::Dev(l) => write!(f, "dev:{l}"),
        }
    }
}

impl fmt::Display for OrbRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.pin)
    }
}

fn is_orb_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_lowercase())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Parses `namespace/name@pin`; `Err` explains what is wrong.
pub fn parse_ref(s: &str) -> Result<OrbRef, String> {
    let bad = || {
        format!(
            "invalid orb reference '{s}': expected namespace/name@version (version x.y.z, x.y, x, volatile or dev:label)"
        )
    };
    let (path, pin) = s.split_once('@').ok_or_else(bad)?;
    let (namespace, name) = path.split_once('/').ok_or_else(bad)?;
    if !is_orb_name(namespace) || !is_orb_name(name) {
        return Err(bad());
    }
    Ok(OrbRef {
        namespace: namespace.into(),
        name: name.into(),
        pin: parse_pin(pin).ok_or_else(bad)?,
    })
}

/// Parses a pin: `1.2.3`, `1.2`, `1`, `volatile` or `dev:label`.
pub fn parse_pin(s: &str) -> Option<Pin> {
    if s == "volatile" {
        return Some(Pin::Volatile);
    }
    if let Some(label) = s.strip_prefix("dev:") {
        let ok = !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        return ok.then(|| Pin::Dev(label.into()));
    }
    let parts: Vec<&str> = s.split('.').collect();
    let nums: Option<Vec<u64>> = parts
        .iter()
        .map(|p| {
            (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    match nums?.as_slice() {
        [a] => Some(Pin::Major(*a)),
        [a, b] => Some(Pin::Minor(*a, *b)),
        [a, b, c] => Some(Pin::Exact(*a, *b, *c)),
        _ => None,
    }
}

/// A version an [`OrbSource`] holds: a release `x.y.z` or a dev label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrbVersion {
    Release(u64, u64, u64),
    Dev(String),
}

impl fmt::Display for OrbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrbVersion::Release(a, b, c) => write!(f, "{a}.{b}.{c}"),
            OrbVersion::Dev(l) => write!(f, "dev:{l}"),
        }
    }
}

impl OrbVersion {
    /// Parses `1.2.3`, `v1.2.3` or `dev:label`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(l) = s.strip_prefix("dev:") {
            return Some(OrbVersion::Dev(l.into()));
        }
        match parse_pin(s.strip_prefix('v').unwrap_or(s))? {
            Pin::Exact(a, b, c) => Some(OrbVersion::Release(a, b, c)),
            _ => None,
        }
    }
}

/// The text of one orb version.
#[derive(Clone, Debug)]
pub enum OrbText {
    /// A packed `orb.yml`, with the name to report positions under.
    Packed { name: String, text: String },
    /// An unpacked source tree: paths relative to `src/` (`@orb.yml`, `jobs/test.yml`,
    /// `scripts/x.sh`), the name to report positions under, and the text.
    Unpacked { files: Vec<UnpackedFile> },
}

/// One file of an unpacked orb.
#[derive(Clone, Debug)]
pub struct UnpackedFile {
    pub path: String,
    pub display: String,
    pub text: String,
}

/// Why an orb could not be loaded.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrbError {
    /// The source has no orb of that namespace and name.
    #[error("unknown orb '{0}'")]
    NotFound(String),
    /// The source could not be read.
    #[error("cannot read orb '{orb}': {reason}")]
    Unreadable { orb: String, reason: String },
}

/// Where orbs come from: a local directory, the server's registry, memory.
pub trait OrbSource {
    /// Versions held of `namespace/name` (empty or `NotFound` when none).
    fn versions(&self, namespace: &str, name: &str) -> Result<Vec<OrbVersion>, OrbError>;
    /// The text of one version returned by [`OrbSource::versions`].
    fn load(&self, namespace: &str, name: &str, version: &OrbVersion) -> Result<OrbText, OrbError>;
}

/// No orbs at all.
pub struct NoOrbs;

impl OrbSource for NoOrbs {
    fn versions(&self, namespace: &str, name: &str) -> Result<Vec<OrbVersion>, OrbError> {
        Err(OrbError::NotFound(format!("{namespace}/{name}")))
    }
    fn load(&self, namespace: &str, name: &str, _: &OrbVersion) -> Result<OrbText, OrbError> {
        Err(OrbError::NotFound(format!("{namespace}/{name}")))
    }
}

/// Orbs held in memory: `(namespace, name, version)` → packed text.
#[derive(Default, Clone, Debug)]
pub struct MemoryOrbs {
    pub orbs: BTreeMap<(String, String, OrbVersion), String>,
}

impl MemoryOrbs {
    pub fn insert(&mut self, reference: &str, text: impl Into<String>) {
        if let Some((path, v)) = reference.split_once('@')
            && let Some((ns, name)) = path.split_once('/')
            && let Some(v) = OrbVersion::parse(v)
        {
            self.orbs.insert((ns.into(), name.into(), v), text.into());
        }
    }
}

impl OrbSource for MemoryOrbs {
    fn versions(&self, namespace: &str, name: &str) -> Result<Vec<OrbVersion>, OrbError> {
        Ok(self
            .orbs
            .keys()
            .filter(|(n, m, _)| n == namespace && m == name)
            .map(|(_, _, v)| v.clone())
            .collect())
    }
    fn load(&self, namespace: &str, name: &str, version: &OrbVersion) -> Result<OrbText, OrbError> {
        let key = (namespace.to_string(), name.to_string(), version.clone());
        self.orbs
            .get(&key)
            .map(|t| OrbText::Packed {
                name: format!("{namespace}/{name}@{version}"),
                text: t.clone(),
            })
            .ok_or_else(|| OrbError::NotFound(format!("{namespace}/{name}@{version}")))
    }
}

/// The outcome of resolving a pin against the versions held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub version: OrbVersion,
    /// True when no held version satisfies the pin and the closest one was taken.
    pub fallback: bool,
}

/// Picks the version a pin means: the newest matching release, else the closest one.
pub fn resolve_pin(pin: &Pin, held: &[OrbVersion]) -> Option<Resolution> {
    let releases = || {
        held.iter().filter_map(|v| match v {
            OrbVersion::Release(a, b, c) => Some((*a, *b, *c)),
            OrbVersion::Dev(_) => None,
        })
    };
    let matching =
        |f: &dyn Fn(u64, u64, u64) -> bool| releases().filter(|(a, b, c)| f(*a, *b, *c)).max();
    let found = match pin {
        Pin::Exact(x, y, z) => matching(&|a, b, c| (a, b, c) == (*x, *y, *z)),
        Pin::Minor(x, y) => matching(&|a, b, _| (a, b) == (*x, *y)),
        Pin::Major(x) => matching(&|a, _, _| a == *x),
        Pin::Volatile => releases().max(),
        Pin::Dev(label) => {
            if held.contains(&OrbVersion::Dev(label.clone())) {
                return Some(Resolution {
                    version: OrbVersion::Dev(label.clone()),
                    fallback: false,
                });
            }
            None
        }
    };
    if let Some((a, b, c)) = found {
        return Some(Resolution {
            version: OrbVersion::Release(a, b, c),
            fallback: false,
        });
    }
    // Closest: same major first, then nearest major; within it nearest minor, patch.
    let (tx, ty, tz) = match pin {
        Pin::Exact(x, y, z) => (*x, *y, *z),
        Pin::Minor(x, y) => (*x, *y, u64::MAX),
        Pin::Major(x) => (*x, u64::MAX, u64::MAX),
        Pin::Volatile | Pin::Dev(_) => (u64::MAX, u64::MAX, u64::MAX),
    };
    let closest = releases().min_by_key(|(a, b, c)| {
        (
            a.abs_diff(tx),
            b.abs_diff(ty),
            c.abs_diff(tz),
            std::cmp::Reverse((*a, *b, *c)),
        )
    });
    if let Some((a, b, c)) = closest {
        return Some(Resolution {
            version: OrbVersion::Release(a, b, c),
            fallback: true,
        });
    }
    held.first().map(|v| Resolution {
        version: v.clone(),
        fallback: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        assert_eq!(parse_pin("1.2.3"), Some(Pin::Exact(1, 2, 3)));
        assert_eq!(parse_pin("1.2"), Some(Pin::Minor(1, 2)));
        assert_eq!(parse_pin("5"), Some(Pin::Major(5)));
        assert_eq!(parse_pin("volatile"), Some(Pin::Volatile));
        assert_eq!(parse_pin("dev:102"), Some(Pin::Dev("102".into())));
        assert_eq!(parse_pin("1.2.3.4"), None);
        assert_eq!(parse_pin("v1"), None);
        assert!(parse_ref("circleci/node@5.1").is_ok());
        assert!(parse_ref("circleci/node").is_err());
        assert!(parse_ref("Circleci/node@1").is_err());
    }

    #[test]
    fn pins_resolve_newest_matching_then_closest() {
        let held: Vec<OrbVersion> = ["1.2.3", "1.2.9", "1.4.0", "2.0.1"]
            .iter()
            .map(|v| OrbVersion::parse(v).unwrap())
            .collect();
        let r = |p: &str| resolve_pin(&parse_pin(p).unwrap(), &held).unwrap();
        assert_eq!(r("1.2").version.to_string(), "1.2.9");
        assert_eq!(r("1").version.to_string(), "1.4.0");
        assert_eq!(r("volatile").version.to_string(), "2.0.1");
        assert_eq!(
            r("1.2.3"),
            Resolution {
                version: OrbVersion::Release(1, 2, 3),
                fallback: false
            }
        );
        let fb = r("1.3");
        assert!(fb.fallback);
        assert_eq!(fb.version.to_string(), "1.2.9");
        assert_eq!(r("3").version.to_string(), "2.0.1");
    }
}
