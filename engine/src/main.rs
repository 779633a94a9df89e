use runbook_engine::cli::{self, Cli};

fn main() {
    let cli = Cli::from_args();
    // A command drives at most one run, whose steps wait on I/O: one worker runs it and its plugin
    // calls without waking a second thread to steal each new task (W4, a 1,000-step chain, went
    // from 52 to 39 ms). Nothing blocks that worker: stdin is read on a thread of its own, blocking
    // calls go to tokio's blocking pool. `serve` and `worker` drive many runs and serve HTTP.
    let workers = match cli.command {
        cli::Command::Serve(_) | cli::Command::Worker(_) => 2,
        _ => 1,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
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
