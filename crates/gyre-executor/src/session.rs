//! Talking to the helper (`circleci __agent`): JSON-line requests in, frames out.
//!
//! The transport (a `docker exec` attach or a child's pipes) feeds raw bytes to a decoder
//! task that sends whole frames through a bounded channel, so memory stays bounded.

use std::pin::Pin;

use gyre_protocol::helper::{Done, FrameKind, HEADER_LEN, Hello, Request, parse_header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Error;

/// One decoded frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub kind: FrameKind,
    pub id: u32,
    pub payload: Vec<u8>,
}

/// Incremental frame decoder.
#[derive(Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), Error> {
        if self.buf.is_empty() {
            // The usual case: whole frames straight from the read buffer, only a partial
            // last frame kept.
            let used = decode(bytes, out)?;
            self.buf.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let used = decode(&self.buf, out)?;
        self.buf.drain(..used);
        Ok(())
    }
}

/// Decodes the whole frames at the start of `bytes`; how many bytes they took.
fn decode(bytes: &[u8], out: &mut Vec<Frame>) -> Result<usize, Error> {
    let mut start = 0;
    while bytes.len() - start >= HEADER_LEN {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&bytes[start..start + HEADER_LEN]);
        let (kind, id, len) = parse_header(&head);
        let Some(kind) = FrameKind::from_u8(kind) else {
            return Err(Error::Helper(format!("unknown frame kind {kind}")));
        };
        if bytes.len() - start - HEADER_LEN < len {
            break;
        }
        let body = start + HEADER_LEN;
        out.push(Frame {
            kind,
            id,
            payload: bytes[body..body + len].to_vec(),
        });
        start = body + len;
    }
    Ok(start)
}

/// A running helper.
pub(crate) struct Session {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    frames: mpsc::Receiver<Result<Frame, Error>>,
    pub hello: Hello,
    next_id: u32,
}

impl Session {
    /// Wraps a transport; waits for the helper's hello.
    pub async fn start(
        input: Pin<Box<dyn AsyncWrite + Send>>,
        mut frames: mpsc::Receiver<Result<Frame, Error>>,
    ) -> Result<Session, Error> {
        let first = frames
            .recv()
            .await
            .ok_or_else(|| Error::Helper("the helper exited before saying hello".to_owned()))??;
        if first.kind != FrameKind::Hello {
            return Err(Error::Helper(
                "the helper did not start with hello".to_owned(),
            ));
        }
        let hello: Hello = serde_json::from_slice(&first.payload)
            .map_err(|err| Error::Helper(format!("bad hello: {err}")))?;
        Ok(Session {
            input,
            frames,
            hello,
            next_id: 1,
        })
    }

    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn send(&mut self, request: &Request) -> Result<(), Error> {
        let mut line = serde_json::to_vec(request)
            .map_err(|err| Error::Helper(format!("cannot encode request: {err}")))?;
        line.push(b'\n');
        self.input
            .write_all(&line)
            .await
            .map_err(|err| Error::Helper(format!("cannot write to the helper: {err}")))?;
        self.input
            .flush()
            .await
            .map_err(|err| Error::Helper(format!("cannot write to the helper: {err}")))
    }

    /// Next frame; `None` when the helper is gone.
    pub async fn recv(&mut self) -> Option<Result<Frame, Error>> {
        self.frames.recv().await
    }

    /// Sends a request and waits for its `Done`, ignoring other frames (`Prepare` only).
    pub async fn call(&mut self, request: Request, id: u32) -> Result<Done, Error> {
        self.send(&request).await?;
        loop {
            let frame = self
                .recv()
                .await
                .ok_or_else(|| Error::Helper("the helper exited".to_owned()))??;
            if frame.kind == FrameKind::Done && frame.id == id {
                return serde_json::from_slice(&frame.payload)
                    .map_err(|err| Error::Helper(format!("bad done frame: {err}")));
            }
        }
    }

    /// Closes the helper's stdin: it kills what it started and exits.
    pub async fn close(mut self) {
        let _ = self.input.shutdown().await;
    }
}

/// Decodes helper output into frames and sends them on, whatever the transport.
pub(crate) struct FramePump {
    decoder: Decoder,
    frames: Vec<Frame>,
    tx: mpsc::Sender<Result<Frame, Error>>,
}

impl FramePump {
    pub fn new(tx: mpsc::Sender<Result<Frame, Error>>) -> FramePump {
        FramePump {
            decoder: Decoder::default(),
            frames: Vec::new(),
            tx,
        }
    }

    /// Feeds bytes; false when the pump must stop (bad frame sent on, or nobody listens).
    pub async fn push(&mut self, bytes: &[u8]) -> bool {
        if let Err(err) = self.decoder.push(bytes, &mut self.frames) {
            let _ = self.tx.send(Err(err)).await;
            return false;
        }
        for frame in self.frames.drain(..) {
            if self.tx.send(Ok(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Reports a transport error to the session.
    pub async fn fail(self, message: String) {
        let _ = self.tx.send(Err(Error::Helper(message))).await;
    }

    /// Pumps `reader` until it ends; `what` names the transport in errors.
    pub async fn run<R: AsyncRead + Unpin>(mut self, mut reader: R, buf_size: usize, what: &str) {
        let mut buf = vec![0u8; buf_size];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if !self.push(&buf[..n]).await {
                        return;
                    }
                }
                Err(err) => return self.fail(format!("{what}: {err}")).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_protocol::helper::header;

    proptest::proptest! {
        /// Frames decode the same however the transport cuts the bytes, and garbage is an
        /// error or a wait for more, never a panic.
        #[test]
        fn frames_decode_whatever_the_cuts(
            frames in proptest::collection::vec(
                (2u8..=4, 0u32..5, proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                0..6,
            ),
            cuts in proptest::collection::vec(1usize..64, 0..40),
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut bytes = Vec::new();
            for (kind, id, payload) in &frames {
                let kind = FrameKind::from_u8(*kind).expect("kind");
                bytes.extend(header(kind, *id, payload.len()));
                bytes.extend(payload);
            }
            let mut decoder = Decoder::default();
            let mut out = vec![];
            let mut rest = bytes.as_slice();
            for cut in cuts {
                let (piece, tail) = rest.split_at(cut.min(rest.len()));
                decoder.push(piece, &mut out).expect("valid frames");
                rest = tail;
            }
            decoder.push(rest, &mut out).expect("valid frames");
            let got: Vec<(u8, u32, Vec<u8>)> =
                out.into_iter().map(|f| (f.kind as u8, f.id, f.payload)).collect();
            proptest::prop_assert_eq!(got, frames);
            let _ = Decoder::default().push(&garbage, &mut vec![]);
        }
    }

    #[test]
    fn decodes_split_frames() {
        let mut bytes = header(FrameKind::Stdout, 3, 5).to_vec();
        bytes.extend(b"hello");
        bytes.extend(header(FrameKind::Done, 3, 2));
        bytes.extend(b"{}");
        let mut decoder = Decoder::default();
        let mut frames = vec![];
        for piece in bytes.chunks(4) {
            decoder.push(piece, &mut frames).unwrap();
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, b"hello");
        assert_eq!((frames[1].kind, frames[1].id), (FrameKind::Done, 3));
        assert!(decoder.push(&[9; 9], &mut frames).is_err());
    }
}
