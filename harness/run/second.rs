//! The second socket of a case: options, bind, and for TCP `listen()`.

use std::net::SocketAddr;

use socket2::Socket;

use super::setup::{self, BACKLOG};
use crate::outcome::{OsError, Outcome, SetupError, Side, StateCheck};
use crate::scenario::{Case, Proto, State};

/// Bind the second socket of `case` on `port` while the first holds it.
/// `first_listens` runs between the second socket's bind and its listen:
/// the `bound-then-listen` state makes the first socket listen there.
/// The socket comes back with the answer when it took the port, for the
/// delivery step; dropping it closes it.
pub fn bind(
    case: &Case,
    port: u16,
    check: StateCheck,
    first_listens: &mut dyn FnMut() -> Result<(), SetupError>,
) -> (Outcome, Option<Socket>) {
    let socket = match setup::open(case.proto, &case.second, Side::Second) {
        Ok(s) => s,
        Err(e) => return (e.into(), None),
    };
    let addr = SocketAddr::new(case.second.endpoint.ip, port);
    let bind = socket.bind(&addr.into()).map_err(|e| OsError::of(&e));
    if bind.is_ok() && case.state == State::BoundThenListen {
        if let Err(e) = first_listens() {
            return (e.into(), None);
        }
    }
    let listen = match (case.proto, &bind) {
        (Proto::Tcp, Ok(())) => Some(socket.listen(BACKLOG).map_err(|e| OsError::of(&e))),
        _ => None,
    };
    let outcome = Outcome::Ran {
        bind,
        listen,
        check,
        delivery: None,
    };
    (outcome, Some(socket))
}
