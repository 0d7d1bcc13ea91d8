"""How minimtl refuses bad input, under every other part: the one exception a user sees (`errors.UserError`)
and bounded readers of what a user hands over (`errors.read_json`, `files.read_state_dict`, ...).

Not part of the lesson: the core calls these readers so that a damaged file is one clear line, and a
reader of the core can take each call as "read this file".
"""
