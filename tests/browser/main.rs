//! The buyer's page in a real browser: headless Chromium driven through ChromeDriver (W3C
//! WebDriver over HTTP on 127.0.0.1), against a real server. `.ci/run` installs Debian's
//! `chromium` and `chromium-driver` when they are missing.
//!
//! Screenshots of the screens at desktop and phone sizes are written to
//! `target/tmp/browser-screenshots/`. Accessibility is checked with axe-core
//! (`tests/browser/axe.min.js`, version 4.14.1 from the npm registry, MPL-2.0), run in the page.

mod accessibility;
mod docs;
mod halls;
mod phone;
mod purchase;
mod reservations;
mod returns;
mod support;
mod venues;
mod waiting;
