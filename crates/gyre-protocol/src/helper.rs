//! Executor <-> helper framing.
//!
//! The executor starts the helper (`circleci __agent`) once per task, inside the primary
//! container (one `docker exec`) or on the host (machine executor), and sends it
//! [`Request`]s as JSON lines on its stdin. The helper answers on stdout with binary frames:
//! `kind: u8, id: u32 LE, len: u32 LE, payload[len]` (see [`FrameKind`]). Output frames carry
//! raw bytes; the others carry JSON. Closing the helper's stdin kills every process it
//! started (background steps included) and makes it exit.

use serde::{Deserialize, Serialize};

/// Largest payload of one frame; output is cut into frames of at most this size.
pub const MAX_FRAME: usize = 64 * 1024;

/// Size of a frame header.
pub const HEADER_LEN: usize = 9;

/// A request from the executor (one JSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Create directories (`mkdir -p`) and empty files; answered by a [`FrameKind::Done`]
    /// frame with the same id carrying a [`Done`].
    Prepare {
        id: u32,
        dirs: Vec<String>,
        files: Vec<String>,
    },
    /// Run a script: `argv` followed by the path of a file holding `script`.
    Run(RunRequest),
}

/// One process to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub id: u32,
    /// Shell argv, e.g. `["/bin/bash", "-eo", "pipefail"]`; the script path is appended.
    pub argv: Vec<String>,
    pub script: String,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Kill the process group after this long without output.
    pub no_output_timeout_ms: u64,
    /// File whose existence after the step means `circleci step halt` was called.
    pub halt_file: Option<String>,
}

/// Frame kinds sent by the helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame, id 0, JSON [`Hello`].
    Hello = 1,
    /// Raw stdout bytes of the process `id`.
    Stdout = 2,
    /// Raw stderr bytes of the process `id`.
    Stderr = 3,
    /// End of request `id`, JSON [`Done`]; output frames of `id` all come before it.
    Done = 4,
}

impl FrameKind {
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Hello),
            2 => Some(FrameKind::Stdout),
            3 => Some(FrameKind::Stderr),
            4 => Some(FrameKind::Done),
            _ => None,
        }
    }
}

/// What the helper learnt about where it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub uid: u32,
    pub gid: u32,
    /// `$HOME`, else the home of `uid` in /etc/passwd, else `/`.
    pub home: String,
    /// Whether `/bin/bash` exists.
    pub has_bash: bool,
    /// `std::env::consts::{OS, ARCH}` joined by `-`.
    pub arch: String,
}

/// End of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed the process.
    pub signal: Option<i32>,
    /// Killed by the helper after `no_output_timeout_ms` without output.
    pub timed_out: bool,
    /// `circleci step halt` was called.
    pub halted: bool,
    /// The request could not be carried out (missing directory, shell not found...).
    pub error: Option<String>,
    /// The process was killed and the kernel's OOM killer fired in the helper's memory
    /// cgroup while it ran (the container's memory limit).
    #[serde(default)]
    pub oom_killed: bool,
}

/// Encodes one frame header.
pub fn header(kind: FrameKind, id: u32, len: usize) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = kind as u8;
    out[1..5].copy_from_slice(&id.to_le_bytes());
    out[5..9].copy_from_slice(&(len as u32).to_le_bytes());
    out
}

/// A decoded frame header: kind byte, id, payload length.
pub fn parse_header(bytes: &[u8; HEADER_LEN]) -> (u8, u32, usize) {
    let id = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    (bytes[0], id, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = header(FrameKind::Stderr, 7, 65536);
        assert_eq!(parse_header(&h), (3, 7, 65536));
        assert_eq!(FrameKind::from_u8(3), Some(FrameKind::Stderr));
        assert_eq!(FrameKind::from_u8(9), None);
    }
}
