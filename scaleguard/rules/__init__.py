"""Domain rules with exactly one source: collectors, policies, remediators and the lab all ask these."""
