"""Tools for testing mobilenets itself: fault injection and the kill-and-resume campaign."""
