use runbook_engine::cli::{self, Cli};

fn main() {
    let cli = Cli::from_args();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(cli::exit::ENVIRONMENT);
        }
    };
    // On a worker thread, not this one: the tasks a run spawns (its plugin calls) then start on the
    // worker that spawned them instead of waking another thread for each, as a server's drivers do.
    let code = match rt.block_on(async { tokio::spawn(cli::main(cli)).await }) {
        Ok(Ok(code)) => code,
        // A panic is a bug, already reported by the panic hook; exit as a panicking Rust program does.
        Err(_) => 101,
        Ok(Err(f)) => {
            if !f.message.is_empty() {
                if f.message.starts_with("error:") {
                    eprintln!("{}", f.message);
                } else {
                    eprintln!("error: {}", f.message);
                }
            }
            f.code
        }
    };
    // Dropping the runtime waits for blocking tasks; a finished run has none worth waiting for.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}
