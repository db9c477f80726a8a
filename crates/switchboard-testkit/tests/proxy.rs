//! The proxy forwards, holds bytes while frozen, and resets on cut.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use switchboard_testkit::TcpProxy;

/// An echo server on a free port.
fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let mut buffer = [0u8; 1024];
                while let Ok(n) = reader.read(&mut buffer) {
                    if n == 0 || writer.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(text)?;
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn forwards_freezes_thaws_and_cuts() {
    let proxy = TcpProxy::to_port(echo());
    let mut client = TcpStream::connect(proxy.address()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(round_trip(&mut client, b"hello").unwrap(), b"hello");
    assert_eq!(proxy.accepted(), 1);

    proxy.freeze();
    std::thread::sleep(Duration::from_millis(100));
    let frozen = round_trip(&mut client, b"held").unwrap_err();
    assert!(
        matches!(frozen.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{frozen:?}"
    );
    proxy.thaw();
    let mut back = [0u8; 4];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"held");

    proxy.cut();
    let mut rest = [0u8; 1];
    let after_cut = client.read(&mut rest);
    assert!(matches!(after_cut, Ok(0) | Err(_)), "{after_cut:?}");

    let mut again = TcpStream::connect(proxy.address()).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(round_trip(&mut again, b"again").unwrap(), b"again");

    proxy.refuse();
    let mut refused = TcpStream::connect(proxy.address()).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(round_trip(&mut refused, b"x").is_err());
}
