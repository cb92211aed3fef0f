//! The progress bar: drawn on stderr for a person at a terminal, hidden when stdout is not a
//! TTY or the report is `--json`. A tokio task refreshes it from counters four times a second.

use std::future::Future;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const REFRESH: Duration = Duration::from_millis(250);

#[derive(Clone, Copy)]
pub struct Display {
    pub enabled: bool,
}

impl Display {
    /// Runs `work` under a bar of `length` steps; `status` gives the position and a message.
    pub async fn run<T>(
        self,
        title: &str,
        length: u64,
        status: impl Fn() -> (u64, String) + Send + 'static,
        work: impl Future<Output = T>,
    ) -> T {
        let bar = if self.enabled {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] {bar:32.cyan/blue} {pos:>8}/{len:8} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(title.to_owned());
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    let (position, message) = status();
                    bar.set_position(position);
                    bar.set_message(message);
                    tokio::time::sleep(REFRESH).await;
                }
            })
        };
        let output = work.await;
        ticker.abort();
        bar.finish_and_clear();
        output
    }
}
