//! Rust's echo servers as the docs of std and tokio show them:
//! - `std`: `std::net::TcpListener::bind` and a thread per client,
//! - `tokio`: `tokio::net::TcpListener::bind` and a task per client,
//! - `tokio-socket`: `tokio::net::TcpSocket::new_v4`, `bind`, `listen`
//!   (sets no option), and `tokio-socket-reuseaddr`, the same with
//!   `set_reuseaddr(true)`: the fix a restart error leads to.
//!
//! Usage: `echo-rust VARIANT PORT [any|loopback]`. Prints the line protocol
//! of runtimes/README.md, with the options read with getsockopt.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::exit;

use socket2::SockRef;

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn flag(value: io::Result<bool>) -> &'static str {
    match value {
        Ok(true) => "1",
        Ok(false) => "0",
        Err(_) => "?",
    }
}

/// One socket of the ready line: its address and options.
fn describe(socket: SockRef<'_>) -> String {
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or_else(|| "?".into(), |a| a.to_string());
    let v6 = addr.starts_with('[');
    #[cfg(unix)]
    let (reuseport, exclusive) = (flag(socket.reuse_port()), "-");
    #[cfg(windows)]
    let (reuseport, exclusive) = ("-", flag(windows::exclusive(&socket)));
    format!(
        "{addr},reuseaddr={},reuseport={reuseport},v6only={},exclusive={exclusive}",
        flag(socket.reuse_address()),
        if v6 { flag(socket.only_v6()) } else { "-" },
    )
}

#[cfg(windows)]
mod windows {
    use std::io;
    use std::os::windows::io::AsRawSocket;

    #[link(name = "ws2_32")]
    extern "system" {
        fn getsockopt(s: usize, level: i32, name: i32, value: *mut u8, len: *mut i32) -> i32;
    }

    /// SO_EXCLUSIVEADDRUSE (~SO_REUSEADDR, winsock2.h); socket2 has no getter.
    pub fn exclusive(socket: &socket2::SockRef<'_>) -> io::Result<bool> {
        let mut value: i32 = 0;
        let mut len = 4;
        // SAFETY: a live socket and an int-sized buffer.
        let rc = unsafe {
            getsockopt(
                socket.as_raw_socket() as usize,
                0xffff,
                !4,
                (&mut value as *mut i32).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value != 0)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn failed(e: &io::Error) -> ! {
    let name = match e.kind() {
        io::ErrorKind::AddrInUse => "EADDRINUSE".to_string(),
        io::ErrorKind::AddrNotAvailable => "EADDRNOTAVAIL".to_string(),
        io::ErrorKind::PermissionDenied => "EACCES".to_string(),
        kind => format!("{kind:?}"),
    };
    say(&format!("failed {name} {e}"));
    exit(1)
}

/// The end of stdin is the harness's word to stop.
fn exit_at_end_of_stdin() {
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        exit(0)
    });
}

fn serve_std(host: &str, port: u16) {
    let listener = std::net::TcpListener::bind((host, port)).unwrap_or_else(|e| failed(&e));
    say(&format!(
        "ready {} {}",
        env!("RUSTC_VERSION"),
        describe(SockRef::from(&listener))
    ));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        say("accepted");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn serve_tokio(variant: &str, host: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| failed(&e));
    runtime.block_on(async {
        let listener = match variant {
            "tokio" => tokio::net::TcpListener::bind((host, port)).await,
            _ => {
                let addr =
                    SocketAddr::from((host.parse::<Ipv4Addr>().expect("an IPv4 host"), port));
                (|| {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    if variant == "tokio-socket-reuseaddr" {
                        socket.set_reuseaddr(true)?;
                    }
                    socket.bind(addr)?;
                    socket.listen(1024)
                })()
            }
        }
        .unwrap_or_else(|e| failed(&e));
        say(&format!(
            "ready {}/rustc-{} {}",
            env!("TOKIO_VERSION"),
            env!("RUSTC_VERSION"),
            describe(SockRef::from(&listener))
        ));
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            say("accepted");
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(variant), Some(Ok(port))) = (args.get(1), args.get(2).map(|p| p.parse::<u16>()))
    else {
        eprintln!(
            "usage: echo-rust std|tokio|tokio-socket|tokio-socket-reuseaddr PORT [any|loopback]"
        );
        exit(2)
    };
    // "0.0.0.0": all interfaces, as the docs write a wildcard address.
    let host = match args.get(3).map(String::as_str) {
        Some("loopback") => "127.0.0.1",
        _ => "0.0.0.0",
    };
    exit_at_end_of_stdin();
    match variant.as_str() {
        "std" => serve_std(host, port),
        "tokio" | "tokio-socket" | "tokio-socket-reuseaddr" => serve_tokio(variant, host, port),
        other => {
            eprintln!("unknown variant {other}");
            exit(2)
        }
    }
}
