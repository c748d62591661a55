"""Reading finished runs: the paper-style table (`table`), report.html (`html`), the run
report (`summary`) and the sweep report (`sweep`)."""
