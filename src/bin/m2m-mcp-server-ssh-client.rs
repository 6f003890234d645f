//! `m2m-mcp-server-ssh-client`: the stdio MCP server an AI host launches;
//! it forwards everything over SSH to `m2m-mcp-server-ssh-server`.

use argh::FromArgs;
use m2m_mcp_server_ssh_server::client::{self, ClientOptions};
use m2m_mcp_server_ssh_server::logging::{self, expand_home};

/// MCP SSH client: a stdio MCP server that forwards to a remote m2m-mcp-server-ssh-server.
#[derive(FromArgs)]
struct Args {
    /// SSH server host (default: localhost)
    #[argh(option, default = "String::from(\"localhost\")")]
    host: String,
    /// SSH server port (default: 8022)
    #[argh(option, default = "8022")]
    port: u16,
    /// SSH user name (default: mcp)
    #[argh(option, default = "String::from(\"mcp\")")]
    username: String,
    /// client private key, ed25519, generated if missing (default: ~/.ssh/m2m_mcp_server_ssh_client)
    #[argh(option, default = "String::from(\"~/.ssh/m2m_mcp_server_ssh_client\")")]
    client_key: String,
    /// known_hosts file used to verify the server (default: ~/.ssh/known_hosts)
    #[argh(option, default = "String::from(\"~/.ssh/known_hosts\")")]
    known_hosts: String,
    /// passphrase of an encrypted client key
    #[argh(option)]
    passphrase: Option<String>,
    /// accept any server host key (unsafe: allows man-in-the-middle attacks)
    #[argh(switch)]
    disable_host_key_checking: bool,
    /// fetch the server key from its key API and register the client key first
    #[argh(switch)]
    use_key_server: bool,
    /// port of the server's key API (default: 8000)
    #[argh(option, default = "8000")]
    key_server_port: u16,
    /// file holding the bearer token the key API requires, if any
    #[argh(option)]
    key_server_token_file: Option<String>,
    /// log level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)
    #[argh(option, default = "String::from(\"INFO\")")]
    log_level: String,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("m2m-mcp-server-ssh-client {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    logging::init_from_flag(&args.log_level);
    let token = match &args.key_server_token_file {
        None => None,
        Some(p) => match std::fs::read_to_string(expand_home(p)) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                eprintln!("error: cannot read --key-server-token-file {p}: {e}");
                std::process::exit(2);
            }
        },
    };
    let opts = ClientOptions {
        host: args.host,
        port: args.port,
        username: args.username,
        client_key: expand_home(&args.client_key),
        known_hosts: expand_home(&args.known_hosts),
        passphrase: args.passphrase,
        disable_host_key_checking: args.disable_host_key_checking,
        use_key_server: args.use_key_server,
        key_server_port: args.key_server_port,
        key_server_token: token,
    };
    if let Err(e) = client::run(&opts) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
