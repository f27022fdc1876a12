use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flowhealth::cli::Cli::parse();
    match flowhealth::cli::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        // A reader that stopped reading (`| head`) is a normal end.
        Err(flowhealth::Error::OutputClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}
