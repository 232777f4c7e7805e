//! Step events from the executor to the server.
//!
//! [`EventSink`] (the executor's [`LogSink`]) sends what it receives through a channel to
//! [`upload`], which gathers [`Batcher`] batches (up to [`BATCH_BYTES`] or
//! [`BATCH_DELAY`]), numbers the events 0, 1, 2, … and posts each batch until the server
//! acknowledges it. A batch, once numbered, is resent unchanged, so retries are safe (the
//! server stores each `seq` once).
//!
//! Memory is bounded by a byte budget ([`MAX_PENDING_BYTES`]): each event holds permits
//! of a semaphore until its batch is acknowledged. When the budget is spent, the sink
//! blocks the task's own thread (`tokio::task::block_in_place`) until the uploader catches
//! up, which stalls the step's output and so the job itself: back-pressure rather than
//! lost logs. `block_in_place` needs the multi-thread runtime; on a current-thread runtime
//! the sink cannot block, and the budget is only a soft limit (logged once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use gyre_executor::{LogChunk, LogSink, StepStatus, Stream};
use gyre_protocol::agent::{Events, OutputStream, StepEvent, StepEventKind, StepOutcome, TaskRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::Error;
use crate::client::{Client, retry};

/// A batch is sent once it holds this many bytes of output…
pub(crate) const BATCH_BYTES: usize = 256 * 1024;
/// …or this long after its first event arrived.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(100);
/// Bytes of events the sink may hold before the server has acknowledged them.
pub(crate) const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Adjacent output of one step and stream is merged into events of at most this size.
const MERGE_LIMIT: usize = 64 * 1024;
/// What an event costs beyond its output bytes (JSON framing), for the budget.
const EVENT_OVERHEAD: usize = 64;

/// One event before it is numbered.
#[derive(Debug)]
pub(crate) struct Item {
    pub at_ms: i64,
    pub step: u32,
    pub kind: ItemKind,
    /// Budget held until the event's batch is acknowledged.
    pub permit: Option<OwnedSemaphorePermit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ItemKind {
    Started {
        name: String,
        header: Option<String>,
    },
    Output {
        stream: OutputStream,
        bytes: Vec<u8>,
    },
    Finished {
        status: StepOutcome,
    },
}

impl ItemKind {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                ItemKind::Started { name, header } => {
                    name.len() + header.as_ref().map_or(0, String::len)
                }
                ItemKind::Output { bytes, .. } => bytes.len(),
                ItemKind::Finished { .. } => 0,
            }
    }
}

/// Numbers events and cuts them into batches. Pure: no IO, no clock.
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    next_seq: u64,
    pending: Vec<Item>,
    pending_bytes: usize,
}

/// A numbered batch and the budget it holds.
#[derive(Debug)]
pub(crate) struct Batch {
    pub events: Events,
    pub permits: Vec<OwnedSemaphorePermit>,
}

impl Batch {
    /// `seq` of the last event.
    pub fn last_seq(&self) -> Option<u64> {
        self.events.events.last().map(|e| e.seq)
    }
}

impl Batcher {
    /// Adds an event; output following output of the same step and stream is merged into
    /// it (up to 64 KiB), keeping the first one's time.
    pub fn push(&mut self, mut item: Item) {
        self.pending_bytes += item.kind.cost();
        if let Some(last) = self.pending.last_mut()
            && last.step == item.step
            && let (
                ItemKind::Output { stream, bytes },
                ItemKind::Output {
                    stream: new_stream,
                    bytes: new_bytes,
                },
            ) = (&mut last.kind, &mut item.kind)
            && stream == new_stream
            && bytes.len() + new_bytes.len() <= MERGE_LIMIT
        {
            bytes.append(new_bytes);
            self.pending_bytes -= EVENT_OVERHEAD;
            if let Some(permit) = item.permit.take() {
                match &mut last.permit {
                    Some(held) => held.merge(permit),
                    None => last.permit = Some(permit),
                }
            }
            return;
        }
        self.pending.push(item);
    }

    /// Bytes (output plus framing) waiting.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Everything waiting as one numbered batch; `None` when nothing waits.
    pub fn take(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending_bytes = 0;
        let mut events = Vec::with_capacity(self.pending.len());
        let mut permits = Vec::new();
        for item in self.pending.drain(..) {
            let kind = match item.kind {
                ItemKind::Started { name, header } => StepEventKind::Started { name, header },
                ItemKind::Output { stream, bytes } => StepEventKind::Output {
                    stream,
                    data: base64::engine::general_purpose::STANDARD.encode(bytes),
                },
                ItemKind::Finished { status } => StepEventKind::Finished { status },
            };
            events.push(StepEvent {
                seq: self.next_seq,
                at_ms: item.at_ms,
                step: item.step,
                kind,
            });
            self.next_seq += 1;
            permits.extend(item.permit);
        }
        Some(Batch {
            events: Events { events },
            permits,
        })
    }
}

/// The executor's [`LogSink`] for one task: events go to [`upload`].
#[derive(Debug)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Item>,
    budget: Arc<Semaphore>,
    /// Whether the sink may block its thread for back-pressure (multi-thread runtime).
    can_block: bool,
    warned: bool,
    last_step: Option<u32>,
}

/// A sink and the receiving end for [`upload`].
pub(crate) fn channel() -> (EventSink, mpsc::UnboundedReceiver<Item>, Arc<Semaphore>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(MAX_PENDING_BYTES));
    let can_block = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let sink = EventSink {
        tx,
        budget: Arc::clone(&budget),
        can_block,
        warned: false,
        last_step: None,
    };
    (sink, rx, budget)
}

impl EventSink {
    /// gyre's own text (an executor error, a cancellation) on the last step that started,
    /// or step 0.
    pub fn system(&mut self, text: &str) {
        let step = self.last_step.unwrap_or(0);
        let kind = ItemKind::Output {
            stream: OutputStream::System,
            bytes: format!("{text}\n").into_bytes(),
        };
        self.send(step, now_ms(), kind);
    }

    fn send(&mut self, step: u32, at_ms: i64, kind: ItemKind) {
        let cost = kind.cost().min(MAX_PENDING_BYTES) as u32;
        let permit = match Arc::clone(&self.budget).try_acquire_many_owned(cost) {
            Ok(permit) => Some(permit),
            // The uploader stopped: the item is dropped with the channel anyway.
            Err(tokio::sync::TryAcquireError::Closed) => None,
            Err(tokio::sync::TryAcquireError::NoPermits) if self.can_block => {
                let budget = Arc::clone(&self.budget);
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(budget.acquire_many_owned(cost))
                })
                .ok()
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "the log upload is behind and this runtime cannot block: buffering past the limit"
                    );
                }
                None
            }
        };
        let _ = self.tx.send(Item {
            at_ms,
            step,
            kind,
            permit,
        });
    }
}

impl LogSink for EventSink {
    fn step_started(&mut self, step: usize, name: &str, header: Option<&str>) {
        let step = step as u32;
        self.last_step = Some(step);
        let kind = ItemKind::Started {
            name: name.to_owned(),
            header: header.map(str::to_owned),
        };
        self.send(step, now_ms(), kind);
    }

    fn chunk(&mut self, chunk: LogChunk) {
        let kind = ItemKind::Output {
            stream: output_stream(chunk.stream),
            bytes: chunk.bytes,
        };
        self.send(chunk.step as u32, ms(chunk.timestamp), kind);
    }

    fn step_finished(&mut self, step: usize, status: StepStatus) {
        let kind = ItemKind::Finished {
            status: step_outcome(status),
        };
        self.send(step as u32, now_ms(), kind);
    }
}

/// Sends the events of `rx` in batches until the sink is dropped and everything is
/// acknowledged. A request that keeps failing for `retry_budget` ends the upload with
/// its error, as does 409 (the lease is lost). The budget is closed when this ends, so
/// the sink never blocks on a dead upload.
pub(crate) async fn upload(
    client: Client,
    task: TaskRef,
    mut rx: mpsc::UnboundedReceiver<Item>,
    budget: Arc<Semaphore>,
    retry_budget: Duration,
) -> Result<(), Error> {
    let result = async {
        let mut batcher = Batcher::default();
        let mut open = true;
        while open {
            let Some(first) = rx.recv().await else { break };
            batcher.push(first);
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            while batcher.pending_bytes() < BATCH_BYTES {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => batcher.push(item),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_elapsed) => break,
                }
            }
            if let Some(batch) = batcher.take() {
                send_batch(&client, task, &batch, retry_budget).await?;
                drop(batch.permits);
            }
        }
        Ok(())
    }
    .await;
    budget.close();
    result
}

/// Posts `batch` until the server says it stored every event of it.
async fn send_batch(
    client: &Client,
    task: TaskRef,
    batch: &Batch,
    retry_budget: Duration,
) -> Result<(), Error> {
    let Some(last) = batch.last_seq() else {
        return Ok(());
    };
    for _ in 0..5 {
        let ack = retry("sending step events", Some(retry_budget), || {
            client.events(task, &batch.events)
        })
        .await?;
        if ack.stored_through.is_some_and(|stored| stored >= last) {
            return Ok(());
        }
        tracing::warn!(
            stored_through = ?ack.stored_through,
            last,
            "the server did not store the whole batch; sending it again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::Protocol(format!(
        "the server keeps acknowledging less than seq {last}"
    )))
}

fn output_stream(stream: Stream) -> OutputStream {
    match stream {
        Stream::Stdout => OutputStream::Stdout,
        Stream::Stderr => OutputStream::Stderr,
        Stream::System => OutputStream::System,
    }
}

pub(crate) fn step_outcome(status: StepStatus) -> StepOutcome {
    match status {
        StepStatus::Success => StepOutcome::Success,
        StepStatus::Failed => StepOutcome::Failed,
        StepStatus::Skipped => StepOutcome::Skipped,
        StepStatus::Background => StepOutcome::Background,
    }
}

fn now_ms() -> i64 {
    ms(SystemTime::now())
}

fn ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(step: u32, stream: OutputStream, text: &str) -> Item {
        Item {
            at_ms: i64::from(step) * 10,
            step,
            kind: ItemKind::Output {
                stream,
                bytes: text.as_bytes().to_vec(),
            },
            permit: None,
        }
    }

    fn started(step: u32) -> Item {
        Item {
            at_ms: 0,
            step,
            kind: ItemKind::Started {
                name: format!("step {step}"),
                header: None,
            },
            permit: None,
        }
    }

    fn shape(batch: &Batch) -> Vec<(u64, u32, String)> {
        batch
            .events
            .events
            .iter()
            .map(|e| {
                let kind = match &e.kind {
                    StepEventKind::Started { name, .. } => format!("started {name}"),
                    StepEventKind::Output { stream, data } => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .unwrap();
                        format!("{stream:?} {}", String::from_utf8(bytes).unwrap())
                    }
                    StepEventKind::Finished { status } => format!("finished {status:?}"),
                };
                (e.seq, e.step, kind)
            })
            .collect()
    }

    #[test]
    fn seq_numbers_continue_across_batches() {
        let mut batcher = Batcher::default();
        assert!(batcher.take().is_none());
        batcher.push(started(0));
        batcher.push(output(0, OutputStream::Stdout, "a"));
        let first = batcher.take().unwrap();
        assert_eq!(first.last_seq(), Some(1));
        batcher.push(output(0, OutputStream::Stdout, "b"));
        batcher.push(Item {
            at_ms: 5,
            step: 0,
            kind: ItemKind::Finished {
                status: StepOutcome::Success,
            },
            permit: None,
        });
        let second = batcher.take().unwrap();
        assert_eq!(
            shape(&second),
            [
                (2, 0, "Stdout b".to_owned()),
                (3, 0, "finished Success".to_owned())
            ]
        );
        assert!(batcher.take().is_none());
    }

    #[test]
    fn adjacent_output_of_one_step_and_stream_is_merged() {
        let mut batcher = Batcher::default();
        batcher.push(started(1));
        batcher.push(output(1, OutputStream::Stdout, "a"));
        batcher.push(output(1, OutputStream::Stdout, "b"));
        batcher.push(output(1, OutputStream::Stderr, "c"));
        batcher.push(output(1, OutputStream::Stdout, "d"));
        batcher.push(output(2, OutputStream::Stdout, "e"));
        assert_eq!(batcher.pending_bytes(), 5 * EVENT_OVERHEAD + 6 + 5);
        let batch = batcher.take().unwrap();
        assert_eq!(
            shape(&batch),
            [
                (0, 1, "started step 1".to_owned()),
                (1, 1, "Stdout ab".to_owned()),
                (2, 1, "Stderr c".to_owned()),
                (3, 1, "Stdout d".to_owned()),
                (4, 2, "Stdout e".to_owned()),
            ]
        );
        assert_eq!(batcher.pending_bytes(), 0);
    }

    #[test]
    fn merged_events_stay_under_the_merge_limit() {
        let mut batcher = Batcher::default();
        let big = "x".repeat(40 * 1024);
        batcher.push(output(0, OutputStream::Stdout, &big));
        batcher.push(output(0, OutputStream::Stdout, &big));
        assert_eq!(batcher.take().unwrap().events.events.len(), 2);
    }

    #[test]
    fn permits_are_held_until_the_batch_is_dropped() {
        let budget = Arc::new(Semaphore::new(100));
        let mut batcher = Batcher::default();
        for _ in 0..3 {
            let mut item = output(0, OutputStream::Stdout, "x");
            item.permit = Some(Arc::clone(&budget).try_acquire_many_owned(10).unwrap());
            batcher.push(item);
        }
        assert_eq!(budget.available_permits(), 70);
        let batch = batcher.take().unwrap();
        assert_eq!(batch.events.events.len(), 1);
        assert_eq!(budget.available_permits(), 70);
        drop(batch);
        assert_eq!(budget.available_permits(), 100);
    }

    #[tokio::test]
    async fn the_sink_sends_steps_in_order_and_system_text_on_the_last_step() {
        let (mut sink, mut rx, _budget) = channel();
        sink.step_started(0, "Spin up environment", None);
        sink.chunk(LogChunk {
            step: 0,
            stream: Stream::Stdout,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1234),
            bytes: b"hello\n".to_vec(),
        });
        sink.step_finished(0, StepStatus::Success);
        sink.step_started(1, "run", Some("#!/bin/sh -eo pipefail"));
        sink.system("docker: gone");
        drop(sink);
        let mut batcher = Batcher::default();
        while let Some(item) = rx.recv().await {
            batcher.push(item);
        }
        let batch = batcher.take().unwrap();
        assert_eq!(batch.events.events[1].at_ms, 1234);
        assert_eq!(
            shape(&batch),
            [
                (0, 0, "started Spin up environment".to_owned()),
                (1, 0, "Stdout hello\n".to_owned()),
                (2, 0, "finished Success".to_owned()),
                (3, 1, "started run".to_owned()),
                (4, 1, "System docker: gone\n".to_owned()),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_budget_blocks_the_sink_until_batches_are_acknowledged() {
        let (mut sink, mut rx, budget) = channel();
        let chunk = vec![b'x'; 60 * 1024];
        let n_chunks = MAX_PENDING_BYTES / chunk.len() + 10;
        let writer = tokio::spawn(async move {
            for _ in 0..n_chunks {
                sink.chunk(LogChunk {
                    step: 0,
                    stream: Stream::Stdout,
                    timestamp: SystemTime::now(),
                    bytes: chunk.clone(),
                });
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "the sink should wait for the budget");
        assert!(budget.available_permits() < 64 * 1024);
        // The "uploader" acknowledges everything: the writer gets through.
        let mut received = 0;
        while let Some(item) = rx.recv().await {
            drop(item);
            received += 1;
        }
        writer.await.unwrap();
        assert_eq!(received, n_chunks);
        assert_eq!(budget.available_permits(), MAX_PENDING_BYTES);
    }
}
