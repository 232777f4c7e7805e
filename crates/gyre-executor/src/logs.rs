//! Step logs: ordered chunks delivered to a [`LogSink`], and secret masking (§8.4).
//!
//! Memory is bounded: output arrives in frames of at most 64 KiB, the masker holds back at
//! most the longest secret minus one byte per stream, and the sink is called synchronously,
//! so a slow sink slows the step (back-pressure) instead of buffering without end.

use std::time::SystemTime;

/// Which stream a chunk comes from. `System` is gyre's own text (errors, notices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

/// A piece of a step's output, already masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// Index of the step in the task's step list.
    pub step: usize,
    pub stream: Stream,
    pub timestamp: SystemTime,
    pub bytes: Vec<u8>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Success,
    Failed,
    /// Not run because of `when` (or a halt).
    Skipped,
    /// Started in the background; its end is not waited for.
    Background,
}

/// Receives a task's log, in order. Called from the task's own future.
pub trait LogSink: Send {
    /// A step begins; `header` is the shell line for `run` steps (`#!/bin/bash -eo pipefail`).
    fn step_started(&mut self, step: usize, name: &str, header: Option<&str>);
    fn chunk(&mut self, chunk: LogChunk);
    fn step_finished(&mut self, step: usize, status: StepStatus);
}

/// A sink that keeps everything in memory (tests, small tasks).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub started: Vec<(usize, String)>,
    pub chunks: Vec<LogChunk>,
    pub finished: Vec<(usize, StepStatus)>,
}

impl MemorySink {
    /// All output of one step (all streams) as text.
    pub fn step_text(&self, step: usize) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|c| c.step == step)
            .flat_map(|c| c.bytes.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// All output of the task as text.
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .flat_map(|c| c.bytes.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn status(&self, step: usize) -> Option<StepStatus> {
        self.finished
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, st)| *st)
    }
}

impl LogSink for MemorySink {
    fn step_started(&mut self, step: usize, name: &str, _header: Option<&str>) {
        self.started.push((step, name.to_owned()));
    }
    fn chunk(&mut self, chunk: LogChunk) {
        self.chunks.push(chunk);
    }
    fn step_finished(&mut self, step: usize, status: StepStatus) {
        self.finished.push((step, status));
    }
}

/// A sink that discards output (benchmarks).
#[derive(Debug, Default)]
pub struct NullSink {
    pub bytes: u64,
}

impl LogSink for NullSink {
    fn step_started(&mut self, _step: usize, _name: &str, _header: Option<&str>) {}
    fn chunk(&mut self, chunk: LogChunk) {
        self.bytes += chunk.bytes.len() as u64;
    }
    fn step_finished(&mut self, _step: usize, _status: StepStatus) {}
}

/// Replaces secret values by `****` in a stream, even across chunk boundaries.
#[derive(Debug, Clone)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<Vec<u8>>,
    hold: usize,
    pending: Vec<u8>,
    /// Bytes that start some secret.
    first: [bool; 256],
}

impl Masker {
    /// Secrets shorter than 4 bytes and `true`/`false` spellings are not masked (§8.4).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| should_mask(v))
            .map(|v| v.as_bytes().to_vec())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let hold = secrets.first().map_or(0, |s| s.len() - 1);
        let mut first = [false; 256];
        for secret in &secrets {
            first[secret[0] as usize] = true;
        }
        Masker {
            secrets,
            hold,
            pending: Vec::new(),
            first,
        }
    }

    /// Masks `input`, returning what can be emitted now.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return input.to_vec();
        }
        let masked = if self.pending.is_empty() {
            self.replace_all(input)
        } else {
            self.pending.extend_from_slice(input);
            self.replace_all(&self.pending)
        };
        // Keep back a tail that could be the start of a secret still arriving.
        let keep = self.partial_tail(&masked);
        let mut masked = masked;
        self.pending = masked.split_off(masked.len() - keep);
        masked
    }

    /// Everything still held back (end of the stream).
    pub fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    fn replace_all(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            // Jump to the next byte that can start a secret; copy the run in bulk.
            let Some(skip) = input[i..].iter().position(|&b| self.first[b as usize]) else {
                out.extend_from_slice(&input[i..]);
                break;
            };
            out.extend_from_slice(&input[i..i + skip]);
            i += skip;
            match self.secrets.iter().find(|s| input[i..].starts_with(s)) {
                Some(secret) => {
                    out.extend_from_slice(b"****");
                    i += secret.len();
                }
                None => {
                    out.push(input[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// Length of the longest suffix of `data` that is a proper prefix of some secret.
    fn partial_tail(&self, data: &[u8]) -> usize {
        let max = self.hold.min(data.len());
        (1..=max)
            .rev()
            .find(|&n| {
                let tail = &data[data.len() - n..];
                self.secrets
                    .iter()
                    .any(|s| s.len() > n && s.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

/// Whether a secret value is masked (§8.4).
pub fn should_mask(value: &str) -> bool {
    value.len() >= 4 && !matches!(value, "true" | "True" | "false" | "False")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> String {
        let mut masker = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(masker.push(chunk.as_bytes()));
        }
        out.extend(masker.flush());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_across_chunks() {
        assert_eq!(run(&["s3cr3t"], &["a s3c", "r3t b"]), "a **** b");
        assert_eq!(
            run(&["s3cr3t"], &["s", "3", "c", "r", "3", "t", "!"]),
            "****!"
        );
        assert_eq!(
            run(&["abcd", "abcdef"], &["xabcdefx abcdx"]),
            "x****x ****x"
        );
        assert_eq!(run(&["true", "abc"], &["true abc"]), "true abc");
        assert_eq!(run(&["s3cr3t"], &["s3cr", "3x s3cr3"]), "s3cr3x s3cr3");
        assert_eq!(run(&[], &["plain"]), "plain");
    }

    proptest::proptest! {
        /// However the output is cut into chunks, what comes out is what masking the whole
        /// output gives, and no secret is left in it. A small alphabet makes secrets
        /// overlap each other and the text; the text also has the mask's `*`.
        #[test]
        fn masking_ignores_chunking_and_never_leaks(
            secrets in proptest::collection::vec("[ab]{4,7}", 1..4),
            text in "[ab* \n]{0,80}",
            cuts in proptest::collection::vec(0usize..80, 0..10),
        ) {
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let whole = run(&secrets, &[text.as_str()]);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([text.len()]) {
                chunks.push(&text[from..cut]);
                from = cut;
            }
            let chunked = run(&secrets, &chunks);
            proptest::prop_assert_eq!(&chunked, &whole);
            for secret in &secrets {
                proptest::prop_assert!(!whole.contains(secret), "{secret} in {whole:?}");
            }
        }
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut masker = Masker::new(["secret"]);
        assert_eq!(masker.push(b"hello world"), b"hello world");
        assert_eq!(masker.push(b"hello sec"), b"hello ");
        assert_eq!(masker.push(b"ret"), b"****");
    }
}
