"""Progress of long work: a heading, a `keras.utils.Progbar`, and a last line that always ends.

Every long step of kprune (a search's evaluations, the latency table's
measurements, the latency check on exported files) shows its progress the
same way: one heading line that says what runs and what the figures mean,
then a Keras progress bar whose total is the number of steps when it is
known in advance (None shows the count alone), and a final update that
ends the line even when the work stops before the total (a limit, a search
that converges early). All figures are shown as they are (stateful), never
averaged. The heading goes to stdout like the bar (or to the `kprune`
logger when Keras' interactive logging is off,
`keras.utils.disable_interactive_logging()`).

Example:

>>> progress = Progress("Counting to 3", target=3, unit_name="item", verbose=0)
>>> for i in range(1, 4):
...     progress.update(i, twice=2 * i)
>>> progress.finish()
"""

import logging
import sys

import keras

logger = logging.getLogger("kprune")


def heading(text):
    """One line of progress text, where Keras prints its progress."""
    if keras.utils.is_interactive_logging_enabled():
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        logger.info(text)


class Progress:
    """A titled progress bar that ends its line once.

    Args:
        title: the heading printed above the bar.
        target: the number of steps, or None when it is not known in advance.
        unit_name: what a step is ("evaluation", "layer", ...). Defaults to "step".
        verbose: 1 to show, 0 for nothing. Defaults to 1.
    """

    def __init__(self, title, target=None, unit_name="step", verbose=1):
        self.bar, self.current, self.done = None, 0, False
        if verbose:
            heading(title)
            self.bar = keras.utils.Progbar(target, stateful_metrics=None, stateless_metrics=[],
                                           unit_name=unit_name)

    def update(self, current, **values):
        """Show step `current` with the figures `values` (name -> number, None skipped)."""
        self.current = current
        if self.bar is None:
            return
        self.bar.update(current, values=[(k, float(v)) for k, v in values.items() if v is not None])
        self.done = self.bar.target is not None and current >= self.bar.target

    def finish(self, **values):
        """End the bar's line (at the current step) unless it ended at its total."""
        if self.bar is not None and not self.done:
            self.bar.update(self.current, values=[(k, float(v)) for k, v in values.items() if v is not None],
                            finalize=True)
        self.done = True
