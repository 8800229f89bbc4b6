//! Runs the built `chat-server` binary as a separate process on port 0, as an operator would:
//! for black-box tests of start-up, crashes, shutdown and several replicas.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `chat-server`; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    binary: PathBuf,
    pub port: u16,
}

impl ServerProcess {
    /// Starts `binary` (in a test of the server crate: `env!("CARGO_BIN_EXE_chat-server")`) in
    /// `directory` with `variables` on top of a port-0, JSON-log setup, and waits until it listens.
    pub fn start(binary: impl AsRef<Path>, directory: &Path, variables: &[(&str, String)]) -> Self {
        let binary = binary.as_ref().to_path_buf();
        let mut command = Command::new(&binary);
        command
            .current_dir(directory)
            .env_clear()
            .env("CHAT__SERVER__PORT", "0")
            .env("CHAT__LOG__FORMAT", "json")
            .env("CHAT__LOG__LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in variables {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("chat-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_sender, port_receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("chat-server listening") {
                    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log");
                    let _ = port_sender.send(log["port"].as_u64().expect("port field") as u16);
                }
            }
        });
        let port = port_receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("chat-server reports its port");
        Self {
            child,
            binary,
            port,
        }
    }

    /// The binary this process runs, to start another replica or a restart.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or clean up, like a power cut for the process.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, as Kubernetes and Docker stop a container.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGINT, as Ctrl-C in a terminal.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    fn signal(&self, option: &str) {
        let status = Command::new("kill")
            .args([option, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chat-server did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for start-up failures) and returns its exit status and stderr.
pub fn run_to_exit(
    binary: impl AsRef<Path>,
    directory: &Path,
    variables: &[(&str, &str)],
) -> (ExitStatus, String) {
    let output = Command::new(binary.as_ref())
        .current_dir(directory)
        .env_clear()
        .envs(variables.iter().copied())
        .output()
        .expect("chat-server runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
