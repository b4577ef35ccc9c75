# The Hugging Face Space of the LAS metric (the card's front matter names this file).
import os

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "las.py"))
launch_gradio_widget(module)
