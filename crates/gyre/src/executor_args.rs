//! Executor settings shared by `gyre up`, `gyre agent` and `gyre local execute`.

use std::path::PathBuf;
use std::time::Duration;

use gyre_executor::{JobSettings, RemoteDocker};

/// How jobs run, whichever command runs them.
#[derive(clap::Args, Clone, Debug)]
pub struct ExecutorArgs {
    /// Longest time a job's steps may run (`90s`, `30m`, `5h`); then the running step is
    /// killed and the job fails.
    #[arg(long, value_name = "DURATION", default_value = "5h", value_parser = parse_duration)]
    pub max_job_runtime: Duration,
    /// Directory of SSH private keys that `add_ssh_keys` gives jobs (each with its `.pub`
    /// next to it, or in OpenSSH format); steps pick them by fingerprint.
    #[arg(long, value_name = "DIR")]
    pub ssh_keys_dir: Option<PathBuf>,
    /// What `setup_remote_docker` gives jobs: `off` (the step fails) or `socket` (the
    /// host's Docker engine; this gives job code root on the host).
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = ["off", "socket"])]
    pub remote_docker: String,
}

impl ExecutorArgs {
    /// These settings.
    pub fn settings(&self) -> JobSettings {
        JobSettings {
            max_job_runtime: self.max_job_runtime,
            ssh_keys_dir: self.ssh_keys_dir.clone(),
            remote_docker: self.remote_docker(),
        }
    }

    /// `socket`: the engine's unix socket, from `DOCKER_HOST` when it names one.
    pub fn remote_docker(&self) -> RemoteDocker {
        if self.remote_docker != "socket" {
            return RemoteDocker::Off;
        }
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        RemoteDocker::Socket(socket)
    }
}

/// `90s`, `30m`, `1.5h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h'))) => (&text[..i], c),
        _ => (text, 's'),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m or 5h"))?;
    let secs = value
        * match unit {
            'h' => 3600.0,
            'm' => 60.0,
            _ => 1.0,
        };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1m").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
