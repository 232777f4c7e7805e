//! `gyre config process|validate` and `gyre orb pack`.

use crate::Format;
use anyhow::{Context, bail};
use gyre_config::{NoOrbs, Options, OrbSource, yaml::Value};
use gyre_orbs::DirOrbSource;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the config comes from and what it is compiled with.
#[derive(clap::Args)]
pub struct Input {
    /// The config file.
    #[arg(default_value = ".circleci/config.yml")]
    pub(crate) file: PathBuf,
    /// A directory of orbs: `<namespace>/<name>/<version>.yml` or `<namespace>/<name>/src/@orb.yml`.
    #[arg(long, value_name = "DIR")]
    pub(crate) orb_dir: Option<PathBuf>,
    /// Pipeline parameters as a JSON object, e.g. '{"deploy": true}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) pipeline_parameters: Option<String>,
    /// Pipeline values as a JSON object, e.g. '{"pipeline.git.branch": "main"}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) pipeline_values: Option<String>,
    /// Accept orbs missing from --orb-dir with a warning; their elements are not checked.
    #[arg(long)]
    pub(crate) allow_missing_orbs: bool,
}

fn json_object(
    text: &str,
    what: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text).with_context(|| format!("--{what} is not valid JSON"))? {
        serde_json::Value::Object(m) => Ok(m),
        _ => bail!("--{what} must be a JSON object"),
    }
}

pub(crate) fn compile_input(input: &Input) -> anyhow::Result<gyre_config::Output> {
    let text = std::fs::read_to_string(&input.file)
        .with_context(|| format!("cannot read config file {}", input.file.display()))?;
    let mut opts = Options {
        file_name: input.file.display().to_string(),
        allow_missing_orbs: input.allow_missing_orbs,
        ..Options::default()
    };
    if let Some(p) = &input.pipeline_parameters {
        opts.pipeline_parameters = json_object(p, "pipeline-parameters")?;
    }
    for (k, v) in local_pipeline_values(&input.file) {
        opts.pipeline_values.insert(k.to_string(), v);
    }
    if let Some(v) = &input.pipeline_values {
        for (k, v) in json_object(v, "pipeline-values")? {
            let key = if k.starts_with("pipeline.") {
                k
            } else {
                format!("pipeline.{k}")
            };
            let value = gyre_config::compile::json_to_node(&v, Default::default()).value;
            if matches!(value, Value::Seq(_) | Value::Map(_)) {
                bail!("--pipeline-values: {key} must be a string, number or boolean");
            }
            opts.pipeline_values.insert(key, value);
        }
    }
    if let Some(dir) = &input.orb_dir
        && !dir.is_dir()
    {
        bail!("--orb-dir {} is not a directory", dir.display());
    }
    let source: Box<dyn OrbSource> = match &input.orb_dir {
        Some(dir) => Box::new(DirOrbSource::new(dir)),
        None => Box::new(NoOrbs),
    };
    Ok(gyre_config::compile(&text, &opts, source.as_ref()))
}

fn report(input: &Input, out: &gyre_config::Output) -> bool {
    eprint!("{}", out.render_diagnostics());
    if input.orb_dir.is_none()
        && out
            .diagnostics
            .iter()
            .any(|d| d.message.starts_with("unknown orb"))
    {
        eprintln!(
            "hint: registry orbs are read from --orb-dir DIR (DIR/<namespace>/<name>/<version>.yml or .../src/@orb.yml)"
        );
    }
    out.has_errors()
}

pub fn process(input: &Input, format: Format) -> anyhow::Result<ExitCode> {
    let out = compile_input(input)?;
    if report(input, &out) {
        return Ok(ExitCode::from(1));
    }
    match format {
        Format::Yaml => print!("{}", out.processed_yaml().unwrap_or_default()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&out.processed_json().unwrap_or_default())?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn validate(input: &Input) -> anyhow::Result<ExitCode> {
    let out = compile_input(input)?;
    if report(input, &out) {
        let n = out
            .diagnostics
            .iter()
            .filter(|d| d.severity == gyre_config::Severity::Error)
            .count();
        eprintln!(
            "error: config file {} is invalid ({n} error{})",
            input.file.display(),
            if n == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::from(1));
    }
    println!("Config file at {} is valid.", input.file.display());
    Ok(ExitCode::SUCCESS)
}

pub fn pack(dir: &Path) -> anyhow::Result<ExitCode> {
    let files = gyre_orbs::read_unpacked(dir)
        .with_context(|| format!("cannot read orb source {}", dir.display()))?;
    let mut sources = gyre_config::SourceMap::default();
    match gyre_config::pack::pack(&files, &mut sources, &Default::default()) {
        Ok(node) => {
            print!("{}", gyre_config::emit::to_yaml(&node));
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprint!("{}", gyre_config::diag::render_all(&diags, &sources));
            Ok(ExitCode::from(1))
        }
    }
}

/// Pipeline values for compiling outside a pipeline, as `circleci config process`
/// fabricates them: fixed ids, and git facts of the repository holding the config.
fn local_pipeline_values(file: &Path) -> Vec<(&'static str, Value)> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "0".repeat(40));
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"])
        .filter(|b| b != "HEAD")
        .unwrap_or_else(|| "main".into());
    let mut values = vec![
        (
            "pipeline.id",
            Value::Str("00000000-0000-0000-0000-000000000001".into()),
        ),
        ("pipeline.number", Value::Int(1)),
        ("pipeline.project.type", Value::Str("github".into())),
        ("pipeline.git.branch", Value::Str(branch)),
        ("pipeline.git.revision", Value::Str(revision.clone())),
        ("pipeline.git.base_revision", Value::Str(revision)),
        ("pipeline.trigger_source", Value::Str("webhook".into())),
    ];
    if let Some(url) = git(&["remote", "get-url", "origin"]) {
        values.push(("pipeline.project.git_url", Value::Str(url)));
    }
    if let Some(tag) = git(&["describe", "--tags", "--exact-match"]) {
        values.push(("pipeline.git.tag", Value::Str(tag)));
    }
    values
}
