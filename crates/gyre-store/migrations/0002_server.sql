-- What the server needs beyond the first schema: trigger details of pipelines, the
-- workflow state machine's state, job templates, task outcomes, archived logs, API tokens.
-- Same portability rules as 0001.

-- JSON object: trigger parameters as given.
ALTER TABLE pipelines ADD COLUMN parameters TEXT;
-- JSON object: commit subject/body/author, trigger actor, received_at, repository URLs.
ALTER TABLE pipelines ADD COLUMN vcs TEXT;
-- The processed (compiled) config.
ALTER TABLE pipelines ADD COLUMN compiled TEXT;
-- JSON object: the pipeline values (`pipeline.git.branch` → value).
ALTER TABLE pipelines ADD COLUMN pipeline_values TEXT;

-- gyre-core's WorkflowState, as JSON; rewritten with every event, in the same
-- transaction as the rows the event changed.
ALTER TABLE workflows ADD COLUMN state TEXT;

-- JSON: what the server needs to build the job's tasks (the server's own format).
ALTER TABLE jobs ADD COLUMN spec TEXT;
CREATE INDEX jobs_by_number ON jobs (number);

-- JSON: what the agent reported at the end (message, tests, artifacts).
ALTER TABLE tasks ADD COLUMN outcome TEXT;
-- Blob key of the task's log once archived to object storage (chunks then deleted).
ALTER TABLE tasks ADD COLUMN log_key TEXT;

-- API tokens (personal tokens); only a hash is kept.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
