//! Static assertions that the public handles and the futures an application
//! awaits can cross threads (as in tokio's `async_send_sync.rs`).

use tokio::net::TcpListener;
use wharf::{Connection, Disconnect, Server};

const fn assert_send_sync<T: Send + Sync>() {}

fn assert_send<T: Send>(_: &T) {}

const _: () = {
    assert_send_sync::<Connection>();
    assert_send_sync::<Server>();
    assert_send_sync::<Disconnect>();
};

#[test]
fn handles_are_send_sync_and_their_futures_send() {
    // Never called: type-checking the closures is the assertion.
    let _: fn(&mut Connection) = |conn| assert_send(&conn.recv());
    let _: fn(Server, TcpListener) = |server, listener| assert_send(&server.serve(listener));
}
