"""Text utilities shared by every stage: one answer normaliser, one negation / uncertainty detector, one question
validator and question-type guesser. A leaf package: it imports no other ragmed stage."""
