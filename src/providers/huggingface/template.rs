//! Chat templates for TGI's native `/generate`, which takes one prompt string
//! with the model's chat template already applied. Servers with the Messages
//! API apply the template themselves; these are for the ones without it.
//!
//! No template writes the beginning-of-sequence token (`<|begin_of_text|>`,
//! `<s>`, `<bos>`): TGI's tokenizer adds it to `/generate` inputs itself, and
//! a second one degrades the answer.

use serde::Deserialize;

/// The prompt formats of the common open model families.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen, Hermes, many fine-tunes).
    #[default]
    Chatml,
    /// Llama 3.x headers and `<|eot_id|>`.
    Llama3,
    /// Mistral's `[INST] … [/INST]`; a system prompt opens the first user turn.
    Mistral,
    /// Gemma's `<start_of_turn>user|model`; a system prompt opens the first user turn.
    Gemma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    System,
    User,
    Assistant,
}

/// One turn of the conversation, its content already flattened to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

impl ChatTemplate {
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::Chatml => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Mistral => "mistral",
            ChatTemplate::Gemma => "gemma",
        }
    }

    /// The prompt for `turns`, ending where the assistant's answer begins.
    pub fn render(self, turns: &[Turn]) -> String {
        let size = turns.iter().map(|t| t.text.len() + 32).sum::<usize>() + 64;
        let mut out = String::with_capacity(size);
        match self {
            ChatTemplate::Chatml => {
                for t in turns {
                    let role = match t.speaker {
                        Speaker::System => "system",
                        Speaker::User => "user",
                        Speaker::Assistant => "assistant",
                    };
                    out.push_str("<|im_start|>");
                    out.push_str(role);
                    out.push('\n');
                    out.push_str(&t.text);
                    out.push_str("<|im_end|>\n");
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Llama3 => {
                for t in turns {
                    let role = match t.speaker {
                        Speaker::System => "system",
                        Speaker::User => "user",
                        Speaker::Assistant => "assistant",
                    };
                    out.push_str("<|start_header_id|>");
                    out.push_str(role);
                    out.push_str("<|end_header_id|>\n\n");
                    out.push_str(&t.text);
                    out.push_str("<|eot_id|>");
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            ChatTemplate::Mistral => {
                for t in fold_system(turns) {
                    match t.speaker {
                        Speaker::Assistant => {
                            out.push(' ');
                            out.push_str(&t.text);
                            out.push_str("</s>");
                        }
                        _ => {
                            out.push_str("[INST] ");
                            out.push_str(&t.text);
                            out.push_str(" [/INST]");
                        }
                    }
                }
            }
            ChatTemplate::Gemma => {
                for t in fold_system(turns) {
                    let role = if t.speaker == Speaker::Assistant {
                        "model"
                    } else {
                        "user"
                    };
                    out.push_str("<start_of_turn>");
                    out.push_str(role);
                    out.push('\n');
                    out.push_str(&t.text);
                    out.push_str("<end_of_turn>\n");
                }
                out.push_str("<start_of_turn>model\n");
            }
        }
        out
    }
}

/// For families without a system role: system text opens the next user turn
/// (or stands as a user turn of its own when none follows).
fn fold_system(turns: &[Turn]) -> Vec<Turn> {
    let mut out: Vec<Turn> = Vec::with_capacity(turns.len());
    let mut pending = String::new();
    for t in turns {
        match t.speaker {
            Speaker::System => {
                if !pending.is_empty() {
                    pending.push_str("\n\n");
                }
                pending.push_str(&t.text);
            }
            Speaker::User if !pending.is_empty() => {
                let text = format!("{}\n\n{}", std::mem::take(&mut pending), t.text);
                out.push(Turn {
                    speaker: Speaker::User,
                    text,
                });
            }
            _ => out.push(t.clone()),
        }
    }
    if !pending.is_empty() {
        out.push(Turn {
            speaker: Speaker::User,
            text: pending,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns() -> Vec<Turn> {
        let t = |speaker, text: &str| Turn {
            speaker,
            text: text.to_owned(),
        };
        vec![
            t(Speaker::System, "Be brief."),
            t(Speaker::User, "Hi"),
            t(Speaker::Assistant, "Hello!"),
            t(Speaker::User, "Capital of France?"),
        ]
    }

    #[test]
    fn each_family_renders_its_own_format() {
        assert_eq!(
            ChatTemplate::Chatml.render(&turns()),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::Llama3.render(&turns()),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            ChatTemplate::Mistral.render(&turns()),
            "[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Capital of France? [/INST]"
        );
        assert_eq!(
            ChatTemplate::Gemma.render(&turns()),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn a_lone_system_prompt_still_reaches_families_without_a_system_role() {
        let only = [Turn {
            speaker: Speaker::System,
            text: "Say hi.".into(),
        }];
        assert_eq!(ChatTemplate::Mistral.render(&only), "[INST] Say hi. [/INST]");
    }
}
