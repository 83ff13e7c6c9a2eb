//! baresip as a real SIP user agent in end-to-end tests: a headless process with its own
//! configuration directory (written here: UDP SIP on a fixed 127.0.0.1 port, G.711, audio
//! from a WAV file through `aufile`, what it receives dumped to WAV files by `sndfile`, a
//! `ctrl_tcp` control socket, SIP trace on), killed by PID when dropped.
//!
//! Why the shape:
//! - Debian's baresip 1.0.0 (libre 1.1.0) has no file *player*; `sndfile` (an audio filter)
//!   dumps the decoded incoming audio to `dump-<time>-dec.wav` in `snd_path`, closed when the
//!   call ends, so tests read that file after the hang-up. The player is ALSA's `null` device,
//!   which needs no sound card.
//! - libre 1.1.0 aborts the whole authentication (`ENOSYS`, "Register: Function not
//!   implemented") when *any* `WWW-Authenticate` of a 401 names an algorithm other than MD5,
//!   instead of skipping it (RFC 8760 §2.4). zentrale offers MD5 and SHA-256, so baresip uses a
//!   small outbound proxy ([`Md5OnlyProxy`]) that forwards its datagrams unchanged both ways
//!   and drops only the SHA-256 challenge lines; the digest exchange itself (401, nonce,
//!   `Authorization`, 200) is still zentrale's and baresip's.
//! - Every wait is bounded; the log (stdout and stderr, with the SIP trace) goes to a file in
//!   the test's directory and is printed by [`Baresip::dump`] when a test fails.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sip_gateway::audio::tone::ToneGenerator;

/// Ports of one baresip instance (each test uses its own, from its assigned range).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// baresip's SIP UDP port (it also binds TCP on this port and TLS on the next one).
    pub sip: u16,
    /// The MD5-only outbound proxy's UDP port.
    pub proxy: u16,
    /// The `ctrl_tcp` control socket (TCP).
    pub ctrl: u16,
    /// First and last RTP port baresip may use.
    pub rtp: (u16, u16),
}

/// A running baresip.
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub ports: Ports,
    log: PathBuf,
    proxy: Md5OnlyProxy,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `ms` of a pure tone at 8 kHz mono 16 bit (what `aufile` needs for G.711) to `path`.
pub fn write_tone_wav(path: &Path, freq: f64, ms: u32) {
    let mut samples = vec![0i16; (ms * 8) as usize];
    ToneGenerator::new(freq, 8000).fill(&mut samples);
    let file = std::fs::File::create(path).unwrap();
    sip_gateway::audio::wav::write_8k_mono(std::io::BufWriter::new(file), &samples).unwrap();
}

impl Baresip {
    /// Starts baresip in `dir` (created) with one account `extension` / `password` at the
    /// registrar `server`, answering calls automatically, sending `source_wav` as its audio.
    pub fn start(
        dir: &Path,
        server: SocketAddr,
        extension: &str,
        password: &str,
        ports: Ports,
        source_wav: &Path,
    ) -> Baresip {
        let account = format!(
            "<sip:{extension}@{server}>;auth_pass={password};answermode=auto;audio_codecs=PCMU,PCMA;outbound=\"sip:127.0.0.1:{}\"",
            ports.proxy
        );
        Baresip::start_account(dir, server, &account, ports, source_wav)
    }

    /// As [`Self::start`], with the `accounts` line given (e.g. a caller that does not
    /// register: `<sip:+4930222333@127.0.0.1>;regint=0`).
    pub fn start_account(
        dir: &Path,
        server: SocketAddr,
        account: &str,
        ports: Ports,
        source_wav: &Path,
    ) -> Baresip {
        std::fs::create_dir_all(dir.join("rec")).unwrap();
        let proxy = Md5OnlyProxy::start(ports.proxy, server);
        std::fs::write(
            dir.join("config"),
            format!(
                "poll_method\t\tepoll\n\
                 sip_listen\t\t127.0.0.1:{sip}\n\
                 sip_transports\t\tudp\n\
                 call_local_timeout\t120\n\
                 audio_player\t\talsa,null\n\
                 audio_alert\t\talsa,null\n\
                 audio_source\t\taufile,{wav}\n\
                 rtp_ports\t\t{r0}-{r1}\n\
                 module_path\t\t/usr/lib/baresip/modules\n\
                 module\t\t\tg711.so\n\
                 module\t\t\taufile.so\n\
                 module\t\t\talsa.so\n\
                 module\t\t\tsndfile.so\n\
                 module_app\t\taccount.so\n\
                 module_app\t\tmenu.so\n\
                 module_app\t\tctrl_tcp.so\n\
                 ctrl_tcp_listen\t\t127.0.0.1:{ctrl}\n\
                 snd_path\t\t{rec}\n",
                sip = ports.sip,
                wav = source_wav.display(),
                r0 = ports.rtp.0,
                r1 = ports.rtp.1,
                ctrl = ports.ctrl,
                rec = dir.join("rec").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
        let log = dir.join("baresip.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            // SIP trace into the log; quit on its own after 120 s should the test die.
            .args(["-s", "-t", "120"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip (Debian package baresip) must be installed");
        Baresip {
            child,
            dir: dir.to_owned(),
            ports,
            log,
            proxy,
        }
    }

    /// The log so far (stdout and stderr, with the SIP trace).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Prints the log (for a failing test's output).
    pub fn dump(&self) {
        println!("---- baresip log ----\n{}\n---- end ----", self.log());
    }

    /// Waits up to `limit` until the log contains `needle`; false when it never did.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// As [`Self::wait_log`], panicking with the log when it never appears.
    pub fn expect_log(&self, needle: &str, limit: Duration) {
        if !self.wait_log(needle, limit) {
            self.dump();
            panic!("baresip never logged {needle:?}");
        }
    }

    /// Sends one command over `ctrl_tcp` (a netstring with a JSON object) and returns the
    /// raw reply (bounded by 5 s).
    pub fn command(&self, command: &str, params: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ports.ctrl)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t{}\"}}",
            self.ports.ctrl
        );
        write!(s, "{}:{json},", json.len()).unwrap();
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&out);
                    if text.contains("\"response\"") && text.ends_with(',') {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The WAV file `sndfile` wrote for one direction (`"dec"`: what baresip received,
    /// `"enc"`: what it sent), once it exists (bounded).
    pub fn recording(&self, direction: &str, limit: Duration) -> Option<PathBuf> {
        let until = Instant::now() + limit;
        loop {
            let found = std::fs::read_dir(self.dir.join("rec"))
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().ends_with(&format!("-{direction}.wav"))
                    })
                });
            if found.is_some() || Instant::now() >= until {
                return found;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What baresip received in its (only) call, as 8 kHz samples: stops baresip first (so
    /// `sndfile` has closed and finished the WAV header), then reads the `-dec.wav` dump.
    /// Panics with the log and the file's state when there is none or it does not parse.
    pub fn received_audio(&mut self, limit: Duration) -> Vec<i16> {
        self.stop(limit);
        let Some(path) = self.recording("dec", Duration::from_secs(1)) else {
            self.dump();
            panic!("baresip's sndfile wrote no dump of the received audio");
        };
        let bytes = std::fs::read(&path).unwrap_or_default();
        match sip_gateway::audio::wav::read_as_8k_mono(std::io::Cursor::new(&bytes)) {
            Ok(samples) => samples,
            Err(e) => {
                self.dump();
                panic!(
                    "baresip's dump {} ({} bytes) does not parse: {e}",
                    path.display(),
                    bytes.len()
                );
            }
        }
    }

    /// Asks baresip to quit (SIGTERM to its PID, so `sndfile` closes its files), waiting up to
    /// `limit`; kills it when it takes longer.
    pub fn stop(&mut self, limit: Duration) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How many challenges the proxy saw zentrale send (401 and 407 responses).
    pub fn challenges_seen(&self) -> usize {
        self.proxy.challenges.load(Ordering::Relaxed)
    }
}

/// A UDP forwarder between baresip and zentrale that removes `WWW-Authenticate` and
/// `Proxy-Authenticate` lines naming SHA-256 from zentrale's responses (see the module docs); stops when dropped.
pub struct Md5OnlyProxy {
    stop: Arc<AtomicBool>,
    challenges: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Md5OnlyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Md5OnlyProxy {
    /// Listens on 127.0.0.1:`port`, forwarding to `server`.
    pub fn start(port: u16, server: SocketAddr) -> Md5OnlyProxy {
        let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let challenges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, challenges2) = (stop.clone(), challenges.clone());
        let thread = thread::spawn(move || {
            let mut ua: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if from == server {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.starts_with("SIP/2.0 401") || text.starts_with("SIP/2.0 407") {
                        challenges2.fetch_add(1, Ordering::Relaxed);
                    }
                    let kept: Vec<&str> = text
                        .split("\r\n")
                        .filter(|l| {
                            let name = l.to_ascii_lowercase();
                            !((name.starts_with("www-authenticate")
                                || name.starts_with("proxy-authenticate"))
                                && l.contains("SHA-256"))
                        })
                        .collect();
                    if let Some(to) = ua {
                        let _ = sock.send_to(kept.join("\r\n").as_bytes(), to);
                    }
                } else {
                    ua = Some(from);
                    let _ = sock.send_to(&buf[..n], server);
                }
            }
        });
        Md5OnlyProxy {
            stop,
            challenges,
            thread: Some(thread),
        }
    }
}
