//! API ids. CircleCI's ids are UUIDs; gyre's are numbers. Each kind of object maps to a
//! UUID-shaped string that encodes its kind and number, so clients that validate UUIDs
//! accept them and the server reads them back without a lookup table:
//! `0000000K-JJJJ-4000-8000-NNNNNNNNNNNN` (K kind, J job index, N id, hex).

use gyre_core::{JobId, PipelineId, WorkflowId};

const PIPELINE: u32 = 1;
const WORKFLOW: u32 = 2;
const JOB: u32 = 3;
const PROJECT: u32 = 4;
const USER: u32 = 5;
const CONTEXT: u32 = 6;

fn encode(kind: u32, mid: u64, id: u64) -> String {
    format!("{kind:08x}-{mid:04x}-4000-8000-{id:012x}")
}

fn decode(s: &str, want: u32) -> Option<(u64, u64)> {
    let parts: Vec<&str> = s.split('-').collect();
    let [kind, mid, four, eight, id] = parts.as_slice() else {
        return None;
    };
    let hex = |p: &str, n: usize| {
        (p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(p, 16).ok())
            .flatten()
    };
    if hex(kind, 8)? != u64::from(want) || *four != "4000" || *eight != "8000" {
        return None;
    }
    Some((hex(mid, 4)?, hex(id, 12)?))
}

pub fn pipeline(id: PipelineId) -> String {
    encode(PIPELINE, 0, id.0)
}

pub fn parse_pipeline(s: &str) -> Option<PipelineId> {
    decode(s, PIPELINE).map(|(_, id)| PipelineId(id))
}

pub fn workflow(id: WorkflowId) -> String {
    encode(WORKFLOW, 0, id.0)
}

pub fn parse_workflow(s: &str) -> Option<WorkflowId> {
    decode(s, WORKFLOW).map(|(_, id)| WorkflowId(id))
}

/// A job of a workflow (also its `approval_request_id`).
pub fn job(workflow: WorkflowId, job: JobId) -> String {
    encode(JOB, job.0, workflow.0)
}

pub fn parse_job(s: &str) -> Option<(WorkflowId, JobId)> {
    decode(s, JOB).map(|(j, w)| (WorkflowId(w), JobId(j)))
}

pub fn project(id: u64) -> String {
    encode(PROJECT, 0, id)
}

pub fn user(id: u64) -> String {
    encode(USER, 0, id)
}

pub fn context(id: u64) -> String {
    encode(CONTEXT, 0, id)
}

pub fn parse_context(s: &str) -> Option<u64> {
    decode(s, CONTEXT).map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_round_trip(w in 0u64..(1 << 48), j in 0u64..0x10000) {
            prop_assert_eq!(parse_pipeline(&pipeline(PipelineId(w))), Some(PipelineId(w)));
            prop_assert_eq!(parse_context(&context(w)), Some(w));
            prop_assert_eq!(parse_context(&pipeline(PipelineId(w))), None);
            prop_assert_eq!(parse_workflow(&workflow(WorkflowId(w))), Some(WorkflowId(w)));
            prop_assert_eq!(parse_job(&job(WorkflowId(w), JobId(j))), Some((WorkflowId(w), JobId(j))));
            // Kinds do not mix.
            prop_assert_eq!(parse_workflow(&pipeline(PipelineId(w))), None);
        }

        #[test]
        fn parsing_never_panics(s in ".{0,60}") {
            let _ = (parse_pipeline(&s), parse_workflow(&s), parse_job(&s));
        }
    }

    #[test]
    fn ids_look_like_uuids() {
        assert_eq!(
            workflow(WorkflowId(42)),
            "00000002-0000-4000-8000-00000000002a"
        );
    }
}
