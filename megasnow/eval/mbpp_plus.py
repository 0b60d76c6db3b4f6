"""MBPP+ inputs as EvalPlus runs them: JSON stores tuples, sets and complex numbers as lists/strings, and EvalPlus
turns them back per task (evalplus/data/mbpp.py, mbpp_deserialize_inputs). Same conversions, keyed by task number,
so solutions see the argument types the canonical solution was run with."""


def _tuples(x):
    """Every list at any depth -> tuple."""
    if isinstance(x, list):
        return tuple(_tuples(i) for i in x)
    return x


def _args_to_tuples(inp):
    return [tuple(a) for a in inp]


def _inner_to_tuples(inp):
    return [[tuple(x) for x in a] for a in inp]


CONVERTERS = {}


def _register(numbers, fn):
    for n in numbers:
        CONVERTERS[n] = fn


# every argument is a sequence that the task expects as a tuple
_register([2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744,
           809], _args_to_tuples)
# every argument is a list of tuples
_register([63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780], _inner_to_tuples)
# first argument a list of tuples, second as is
_register([75, 413, 444, 753], lambda inp: [[tuple(x) for x in inp[0]]] + [inp[1]])
# second argument a tuple
_register([106, 750], lambda inp: [inp[0]] + [tuple(inp[1])])
# a list of sets; an empty list becomes an empty dict, exactly as EvalPlus does
_register([115], lambda inp: [[set(i) if isinstance(i, list) and len(i) else {} for i in inp[0]]])
_register([124], lambda inp: (float(inp[0]), complex(inp[1])))
# first argument a tuple, second as is
_register([250, 405, 446, 617, 720, 763, 808], lambda inp: [tuple(inp[0])] + [inp[1]])
# every argument a tuple of tuples
_register([259, 401, 445], lambda inp: [tuple(a) for a in _inner_to_tuples(inp)])
_register([278], lambda inp: [tuple(tuple(i) if isinstance(i, list) else i for i in inp[0])])
_register([307], lambda inp: [tuple(inp[0])] + [inp[1], inp[2]])
_register([722], lambda inp: [{k: tuple(v) for k, v in inp[0].items()}] + inp[1:])
_register([252], lambda inp: [complex(inp[0])])
_register([580, 615, 791], _tuples)


def task_number(task_id):
    try:
        return int(str(task_id).rsplit("/", 1)[-1])
    except ValueError:
        return None


def deserialize_inputs(task_id, inputs):
    """The inputs of MBPP+ task `task_id` ('Mbpp/<n>') with EvalPlus's per-task types restored."""
    fn = CONVERTERS.get(task_number(task_id))
    return list(inputs) if fn is None else [fn(inp) for inp in inputs]
