//! placeholder
use super::{Answer, Prediction, Rule, Why};
use crate::scenario::Case;

pub static TODO: Rule = Rule {
    name: "todo",
    says: "todo",
    source: "todo",
};
pub static RULES: &[&Rule] = &[&TODO];

pub fn predict(_case: &Case) -> Prediction {
    let mut why = Why::default();
    why.say(&TODO);
    why.answer(Answer::Unsupported)
}
