//! The last step of a buyer's purchase, shared by the modes that sell a date out: top up the
//! held reservation's price, then pay it, keeping in the buyer's record what the audit checks.

use crate::api::{self, Fail, Reservation};
use crate::audit::{BuyerRecord, PaidRecord};
use crate::client::Client;

/// How topping up and paying a hold ended.
pub enum Settled {
    /// Paid for this many seats.
    Paid(u32),
    /// Refused, and the hold let go of (cancelled) so others can buy its seats.
    LetGo,
    /// The payment got no answer: it may have landed; the audit settles it.
    Unknown,
}

/// Tops up `reservation`'s price and pays it with `token`, under keys made from `run` and
/// `buyer` so that a retry replays rather than charges twice.
pub async fn top_up_and_pay(
    client: &Client,
    session: &str,
    token: &str,
    reservation: &Reservation,
    (run, buyer): (&str, usize),
    record: &mut BuyerRecord,
) -> Settled {
    if reservation.price > 0 {
        let key = format!("lg-{run}-{buyer}-charge");
        match api::charge(client, session, reservation.price, &key).await {
            Ok(_) => record.topups += reservation.price,
            Err(fail) => {
                if let Fail::NoResponse(_) = fail {
                    record.topups_uncertain += reservation.price;
                }
                let _ = api::cancel(client, session, &reservation.reservation_id).await;
                return Settled::LetGo;
            }
        }
    }
    let key = format!("lg-{run}-{buyer}-pay");
    match api::pay(client, session, token, &reservation.reservation_id, &key).await {
        Ok(payment) => {
            let seats = payment.seat_nos.len() as u32;
            record.paid.push(PaidRecord {
                reservation_id: payment.reservation_id,
                date_id: payment.date_id,
                seat_nos: payment.seat_nos,
                amount: payment.amount,
            });
            Settled::Paid(seats)
        }
        Err(Fail::NoResponse(_)) => {
            record
                .payments_uncertain
                .push(reservation.reservation_id.clone());
            Settled::Unknown
        }
        Err(_) => {
            let _ = api::cancel(client, session, &reservation.reservation_id).await;
            Settled::LetGo
        }
    }
}
