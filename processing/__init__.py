"""Business logic with no broker in sight: what each job does, testable on its own."""
