//! A real `redis-server` on a free loopback port, for the shared revocation
//! store; replicas and a Sentinel (`redis-server --sentinel`, what Debian's
//! `redis-sentinel` runs) for failover. Every wait is bounded.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// A `redis-server` on a free loopback port, killed by PID when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// `--replicaof 127.0.0.1 <port>` when set.
    primary: Option<u16>,
    /// Its working folder: a primary writes an RDB file for each replica
    /// that syncs, which must not land in the repository.
    dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Redis {
    pub async fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            primary: None,
            dir: tempfile::tempdir().ok(),
        };
        r.restart().await;
        r
    }

    /// A replica of the server on `primary`.
    pub async fn start_replica_of(primary: u16) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            primary: Some(primary),
            dir: tempfile::tempdir().ok(),
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and waits for PONG.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(
                self.dir
                    .as_ref()
                    .map(|d| vec!["--dir".into(), d.path().to_string_lossy().into_owned()])
                    .unwrap_or_default(),
            )
            .args(
                self.primary
                    .map(|p| {
                        vec![
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            p.to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if self.ping().await {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }

    /// A handle on a server started by someone else (a cluster node): it is
    /// neither started nor stopped through this value.
    fn at(port: u16) -> Redis {
        Redis {
            child: None,
            port,
            primary: None,
            dir: None,
        }
    }

    /// Waits until the reply to `command` contains `needle`, failing at
    /// `deadline`.
    pub async fn wait_reply(&self, command: &str, needle: &str, deadline: Instant) {
        while !self.command(command).await.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{command} on :{} never answered {needle}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one inline command and returns the raw reply.
    pub async fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis connect");
        s.write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("redis write");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("redis reply in time")
            .expect("redis read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Ends the server (by its PID) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One Sentinel watching the primary `mymaster`, on a free port, killed by
/// PID when dropped. Quorum 1 and a 1 s down-after: a failover in seconds.
pub struct Sentinel {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub const MASTER: &'static str = "mymaster";

    pub async fn start(primary: u16) -> Sentinel {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {m} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {m} 1000\n\
                 sentinel failover-timeout {m} 10000\n\
                 sentinel parallel-syncs {m} 1\n",
                dir.path().display(),
                m = Self::MASTER
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (it runs the sentinel too)");
        let s = Sentinel {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while !s.knows_primary(primary).await {
            assert!(Instant::now() < deadline, "sentinel did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    /// The port of the primary the sentinel currently names.
    pub async fn primary_port(&self) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        s.write_all(format!("SENTINEL get-master-addr-by-name {}\r\n", Self::MASTER).as_bytes())
            .await
            .ok()?;
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().nth(4)?.trim().parse().ok()
    }

    async fn knows_primary(&self, port: u16) -> bool {
        self.primary_port().await == Some(port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-node Redis Cluster (no replicas) on free ports, killed by PID
/// when dropped.
pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for p in &ports {
            children.push(
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                    ])
                    .arg("--cluster-config-file")
                    .arg(dir.path().join(format!("nodes-{p}.conf")))
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed"),
            );
        }
        let c = RedisCluster {
            children,
            ports,
            _dir: dir,
        };
        for p in &c.ports {
            let node = Redis::at(*p);
            let deadline = Instant::now() + WAIT;
            while !node.ping().await {
                assert!(Instant::now() < deadline, "cluster node did not answer");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + WAIT;
        for p in &c.ports {
            Redis::at(*p)
                .wait_reply("CLUSTER INFO", "cluster_state:ok", deadline)
                .await;
        }
        c
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
