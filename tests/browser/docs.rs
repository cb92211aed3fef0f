//! The interactive API docs under their Content-Security-Policy.

use serde_json::json;

use crate::support::*;

/// The docs page works under its Content-Security-Policy: Swagger UI starts, lists the
/// operations and opens one, and the browser reports no violation of the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_works_under_its_content_security_policy() {
    let (server, _) = server(300).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.open(&format!("{}/docs", server.base)).await;
    browser
        .wait_until(
            "Swagger UI shows the title",
            ".swagger-ui .info .title",
            |text, _| text.contains("boxoffice"),
        )
        .await;
    browser.click(".opblock .opblock-summary").await;
    browser.find(".opblock.is-open .opblock-body").await;
    let operations = browser
        .script(
            "return document.querySelectorAll('.opblock').length;",
            json!([]),
        )
        .await;
    assert!(operations.as_u64().unwrap_or(0) >= 20, "{operations}");
    let violations: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .filter(|message| message.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
    browser.close().await;
}
