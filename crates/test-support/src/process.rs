//! Child processes that die with the test run, free ports, and log files kept for failures.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context;

/// A port nobody listens on right now. Another process may take it before we do, so
/// callers retry a failed start on a new port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// The length of `log` now (0 if it does not exist yet): where a server spawned next
/// starts writing, for [`Tethered::announced`].
pub fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |metadata| metadata.len())
}

/// The folder for server logs: `target/test-logs`, kept after the run.
pub fn log_dir() -> PathBuf {
    let dir = crate::deps::workspace_root().join("target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A server process tied to this process: it runs in its own process group under a
/// small shell that kills the whole group when the pipe from us closes. So it dies when
/// [`Tethered`] is dropped, and also when this process exits or is killed, without
/// leaking servers between test runs. (A plain parent-death signal is not enough: it
/// fires when the spawning *thread* ends, and `kc.sh` runs Java as a grandchild.)
pub struct Tethered {
    shell: Child,
    log: PathBuf,
}

/// The shell between us and the server: it runs the server in the background, waits for
/// it, and kills the process group once its stdin (our end of the pipe) closes. A SIGTERM
/// to the shell is passed on to the server, and the shell then exits with the server's
/// status, so a test can stop a service the way Kubernetes does and see how it ended.
/// (Background jobs of a non-interactive shell read /dev/null unless told otherwise,
/// hence the explicit `<&3`.)
const TETHER: &str = r#"exec 3<&0
"$@" </dev/null 3<&- & server=$!
( cat <&3 >/dev/null; kill -KILL -- -$$ ) &
exec 3<&-
trap 'kill -TERM "$server" 2>/dev/null' TERM
wait "$server"; status=$?
while kill -0 "$server" 2>/dev/null; do wait "$server"; status=$?; done
exit "$status""#;

impl Tethered {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Tethered> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(TETHER)
            .arg("tether")
            .arg(program)
            .args(args)
            .envs(envs.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        // SAFETY: setpgid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shell = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Tethered {
            shell,
            log: log.to_owned(),
        })
    }

    /// The server's peak resident memory so far (`VmHWM`), in KiB; `None` once it has
    /// exited or where `/proc` cannot say. The server is the shell's child that is not a
    /// shell itself.
    pub fn peak_resident_kib(&self) -> Option<u64> {
        let shell = self.shell.id().to_string();
        let field = |status: &str, key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|value| value.trim().to_owned())
        };
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
                let child = field(&status, "PPid:")? == shell && field(&status, "Name:")? != "bash";
                if !child {
                    return None;
                }
                field(&status, "VmHWM:")?
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
    }

    /// What follows `prefix` on the first line of the log past byte `from` that starts
    /// with it, once the server writes it: how a server started on port 0 says which port
    /// it bound (`from` is [`log_len`] before the spawn, as logs are appended to). An error
    /// if the server exits first or says nothing within `timeout`.
    pub async fn announced(
        &mut self,
        from: u64,
        prefix: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let bytes = std::fs::read(&self.log)
                .with_context(|| format!("reading {}", self.log.display()))?;
            let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            // Only whole lines: the last one may still be being written.
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            if let Some(rest) = whole.lines().find_map(|line| line.strip_prefix(prefix)) {
                return Ok(rest.trim().to_owned());
            }
            if let Some(status) = self.exited() {
                anyhow::bail!(
                    "{} exited ({status}) before it wrote `{prefix}`",
                    self.log.display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{} did not write `{prefix}` in time", self.log.display());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The exit status, once the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.shell.try_wait().ok().flatten()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sends SIGTERM to the server (through the tether shell) and waits until it exits,
    /// at most `timeout`; its exit status, or `None` if it was still running then (it is
    /// killed when the [`Tethered`] is dropped).
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let pid = i32::try_from(self.shell.id()).ok()?;
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server and everything it started (SIGKILL to the process group).
    /// Returns once every process of the group is gone, so its ports are free.
    pub fn kill(&mut self) {
        let Ok(group) = i32::try_from(self.shell.id()) else {
            return;
        };
        // SAFETY: plain syscall; the group is ours (setpgid above).
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.shell.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // SAFETY: signal 0 only asks whether any process of the group still exists.
        while unsafe { libc::killpg(group, 0) } == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Tethered {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max_lines` lines of a log file, for a failure report.
pub fn log_tail(log: &Path, max_lines: usize) -> String {
    let Ok(mut file) = File::open(log) else {
        return format!("(no log at {})", log.display());
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// Prints a server's log tail to stderr when the current thread is panicking, which is
/// how a failing test ends.
pub fn print_log_if_panicking(name: &str, log: &Path) {
    if std::thread::panicking() {
        eprintln!(
            "---- {name} log ({}), last 200 lines ----\n{}\n---- end of {name} log ----",
            log.display(),
            log_tail(log, 200)
        );
    }
}
