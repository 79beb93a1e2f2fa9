"""Generate the four arithmetic problem tiers in assets/problems/ from seeded templates.

    .venv/bin/python scripts/generate_problems.py           # rewrite the committed files
    .venv/bin/python scripts/generate_problems.py --check   # exit 1 if a committed file differs

The files are generated, never edited by hand, so that every answer is computed from the sampled
quantities and a fix to a template reaches every problem made from it. Each template draws its
numbers, writes the problem, and returns (text, check, answer): `answer` is computed here in
Python, `check` is the same calculation written as an arithmetic expression over the numbers in
the text, so tests/test_problem_sets.py can evaluate it on its own and compare. Numbers are drawn
so that every division and percentage comes out whole, and every answer is a positive whole number.

Determinism: one `random.Random` per tier, seeded from SEED and the tier's name, drawing only
with `randint`, `choice` (whose results have not changed across Python 3 releases); templates
take turns in a fixed order, so the first K problems of a tier cover K different templates.
A template that repeats an earlier problem's text draws again.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.lab.problem_sets import TIERS  # noqa: E402  (after the path is set)

SEED = 17
COUNT = 120  # problems per tier
GENERATED = ("tier1_one_step", "tier2_two_steps", "tier3_multi_step", "tier4_large_numbers")
MAX_DRAWS = 200  # per problem, for a text not seen before in its tier


@dataclass(frozen=True)
class Person:
    name: str
    he: str
    him: str
    his: str


_SHE, _HE = ("she", "her", "her"), ("he", "him", "his")
PEOPLE = tuple(
    Person(name, *pronouns)
    for name, pronouns in (
        ("Sara", _SHE),
        ("Ben", _HE),
        ("Mia", _SHE),
        ("Leo", _HE),
        ("Aisha", _SHE),
        ("Omar", _HE),
        ("Priya", _SHE),
        ("Carlos", _HE),
        ("Yuki", _SHE),
        ("Noah", _HE),
        ("Emma", _SHE),
        ("Ravi", _HE),
        ("Lucia", _SHE),
        ("Tom", _HE),
        ("Zara", _SHE),
        ("Kofi", _HE),
        ("Hana", _SHE),
        ("Diego", _HE),
        ("Nina", _SHE),
        ("Sam", _HE),
        ("Grace", _SHE),
        ("Ivan", _HE),
        ("Amara", _SHE),
        ("Mateo", _HE),
    )
)

Template = Callable[["Draw"], tuple[str, str, int]]
TEMPLATES: dict[str, list[Template]] = {tier: [] for tier in GENERATED}


def template(tier: str) -> Callable[[Template], Template]:
    """Register a template for a tier; the order of definition is the order of use."""

    def register(fn: Template) -> Template:
        TEMPLATES[tier].append(fn)
        return fn

    return register


class Draw:
    """The random choices a template makes, all from its tier's one generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def int(self, low: int, high: int, step: int = 1) -> int:
        """A whole number in [low, high] on the grid low, low + step, ..."""
        return low + step * self.rng.randint(0, (high - low) // step)

    def pick(self, options: Sequence):
        return self.rng.choice(options)

    def people(self, k: int) -> list[Person]:
        """k different people."""
        chosen: list[Person] = []
        while len(chosen) < k:
            person = self.pick(PEOPLE)
            if person not in chosen:
                chosen.append(person)
        return chosen

    def person(self) -> Person:
        return self.people(1)[0]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def with_article(noun: str) -> str:
    """The noun with its indefinite article ("an orchard", "a hall")."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


# Fractions written in words, as (words, numerator, denominator)
FRACTIONS = (
    ("two thirds", 2, 3),
    ("three quarters", 3, 4),
    ("two fifths", 2, 5),
    ("three fifths", 3, 5),
    ("four fifths", 4, 5),
)
UNIT_FRACTIONS = (("half", 1, 2), ("one third", 1, 3), ("one quarter", 1, 4), ("one fifth", 1, 5))
TIMES = {2: "twice", 3: "three times", 4: "four times"}


# ---- tier 1: one operation --------------------------------------------------------------------
T1 = "tier1_one_step"


@template(T1)
def gift(d: Draw):
    a, b = d.people(2)
    have, more = d.int(5, 60), d.int(2, 40)
    things = d.pick(("stickers", "marbles", "pencils", "stamps", "shells", "cards", "beads"))
    text = (
        f"{a.name} has {have} {things}. {b.name} gives {a.him} {more} more. "
        f"How many {things} does {a.name} have now?"
    )
    return text, f"{have}+{more}", have + more


@template(T1)
def delivery(d: Draw):
    place, things, verb = d.pick(
        (
            ("library", "books", "received"),
            ("pet shop", "fish", "got"),
            ("school", "chairs", "bought"),
            ("toy shop", "kites", "ordered"),
        )
    )
    before, new = d.int(20, 400), d.int(5, 90)
    day = d.pick(("Monday", "Tuesday", "Friday"))
    text = (
        f"A {place} had {before} {things}. On {day} it {verb} {new} more {things}. "
        f"How many {things} does the {place} have now?"
    )
    return text, f"{before}+{new}", before + new


@template(T1)
def walk(d: Draw):
    p = d.person()
    morning, evening = d.int(2, 15), d.int(2, 15)
    verb = d.pick(("walked", "cycled", "ran"))
    text = (
        f"{p.name} {verb} {morning} km in the morning and {evening} km in the evening. "
        f"How many kilometres did {p.he} go in all?"
    )
    return text, f"{morning}+{evening}", morning + evening


@template(T1)
def colours(d: Draw):
    things, where = d.pick(
        (
            ("cars", "in a car park"),
            ("balloons", "at a party"),
            ("tulips", "in a garden"),
            ("boats", "in a harbour"),
        )
    )
    first = d.pick(("red", "blue", "yellow"))
    second = d.pick(("white", "green", "black"))
    x, y = d.int(5, 80), d.int(5, 80)
    text = (
        f"There are {x} {first} {things} and {y} {second} {things} {where}. "
        f"How many {things} are there altogether?"
    )
    return text, f"{x}+{y}", x + y


@template(T1)
def spend(d: Draw):
    p = d.person()
    had = d.int(20, 100)
    cost = d.int(3, had - 2)
    thing = d.pick(("a book", "a toy", "lunch", "a T-shirt", "a board game", "flowers"))
    text = (
        f"{p.name} had ${had}. {cap(p.he)} spent ${cost} on {thing}. "
        f"How many dollars does {p.name} have left?"
    )
    return text, f"{had}-{cost}", had - cost


@template(T1)
def bus(d: Draw):
    riders = d.int(15, 60)
    off = d.int(2, riders - 3)
    vehicle = d.pick(("bus", "train", "tram"))
    text = (
        f"A {vehicle} had {riders} passengers. At the next stop, {off} people got off and "
        f"nobody got on. How many passengers are on the {vehicle} now?"
    )
    return text, f"{riders}-{off}", riders - off


@template(T1)
def younger(d: Draw):
    a, b = d.people(2)
    age = d.int(20, 80)
    gap = d.int(2, age - 10)
    text = f"{a.name} is {age} years old. {b.name} is {gap} years younger than {a.name}. How old is {b.name}?"
    return text, f"{age}-{gap}", age - gap


@template(T1)
def sold(d: Draw):
    fruit = d.pick(("apples", "oranges", "mangoes", "pears", "lemons", "peaches"))
    stock = d.int(30, 300)
    gone = d.int(5, stock - 5)
    text = f"A shop had {stock} {fruit}. It sold {gone} of them. How many {fruit} are left?"
    return text, f"{stock}-{gone}", stock - gone


@template(T1)
def more_points(d: Draw):
    a, b = d.people(2)
    low = d.int(10, 90)
    high = low + d.int(2, 40)
    if d.pick((True, False)):
        question = f"How many more points did {a.name} score than {b.name}?"
    else:
        question = f"How many fewer points did {b.name} score than {a.name}?"
    text = f"{a.name} scored {high} points and {b.name} scored {low} points. {question}"
    return text, f"{high}-{low}", high - low


@template(T1)
def boxes(d: Draw):
    per, count = d.int(4, 24), d.int(3, 15)
    things = d.pick(("crayons", "cupcakes", "light bulbs", "tennis balls", "teabags"))
    holder, holders = d.pick((("box", "boxes"), ("pack", "packs"), ("tin", "tins")))
    text = f"A {holder} holds {per} {things}. How many {things} are in {count} {holders}?"
    return text, f"{per}*{count}", per * count


@template(T1)
def hourly(d: Draw):
    p = d.person()
    wage, hours = d.int(8, 25), d.int(3, 12)
    text = f"{p.name} earns ${wage} an hour. How many dollars does {p.he} earn in {hours} hours?"
    return text, f"{wage}*{hours}", wage * hours


@template(T1)
def rows(d: Draw):
    room, things = d.pick(
        (("hall", "chairs"), ("classroom", "desks"), ("cinema", "seats"), ("orchard", "trees"))
    )
    r, per = d.int(3, 20), d.int(4, 15)
    text = (
        f"{cap(with_article(room))} has {r} rows of {things} with {per} {things} in each row. "
        f"How many {things} are there in the {room}?"
    )
    return text, f"{r}*{per}", r * per


@template(T1)
def tickets(d: Draw):
    thing, things = d.pick(
        (
            ("cinema ticket", "cinema tickets"),
            ("bus ticket", "bus tickets"),
            ("notebook", "notebooks"),
            ("sandwich", "sandwiches"),
            ("pot of paint", "pots of paint"),
        )
    )
    price, count = d.int(2, 15), d.int(3, 12)
    text = f"One {thing} costs ${price}. How many dollars do {count} {things} cost?"
    return text, f"{price}*{count}", price * count


@template(T1)
def share(d: Draw):
    p = d.person()
    each, friends = d.int(2, 12), d.int(2, 9)
    things = d.pick(("sweets", "grapes", "stickers", "biscuits", "coins"))
    total = each * friends
    text = (
        f"{p.name} shares {total} {things} equally among {friends} friends. "
        f"How many {things} does each friend get?"
    )
    return text, f"{total}/{friends}", each


@template(T1)
def rope(d: Draw):
    piece, parts = d.int(2, 12), d.int(2, 10)
    thing = d.pick(("rope", "ribbon", "wooden board", "pipe"))
    length = piece * parts
    text = (
        f"A {thing} {length} metres long is cut into {parts} equal pieces. "
        f"How many metres long is each piece?"
    )
    return text, f"{length}/{parts}", piece


@template(T1)
def teams(d: Draw):
    size, count = d.int(3, 8), d.int(3, 12)
    kids = d.pick(("students", "children", "players", "scouts"))
    group = d.pick(("teams", "groups"))
    total = size * count
    text = f"A coach splits {total} {kids} into {group} of {size}. How many {group} are there?"
    return text, f"{total}/{size}", count


@template(T1)
def printer(d: Draw):
    rate, minutes = d.int(5, 30), d.int(2, 12)
    total = rate * minutes
    text = (
        f"A printer prints {rate} pages per minute. "
        f"How many minutes does it take to print {total} pages?"
    )
    return text, f"{total}/{rate}", minutes


@template(T1)
def reading(d: Draw):
    p = d.person()
    per_day, days = d.int(5, 40), d.int(3, 14)
    pages = per_day * days
    text = (
        f"{p.name} read a {pages}-page book in {days} days, reading the same number of "
        f"pages each day. How many pages did {p.he} read each day?"
    )
    return text, f"{pages}/{days}", per_day


# ---- tier 2: two operations -------------------------------------------------------------------
T2 = "tier2_two_steps"


@template(T2)
def change(d: Draw):
    p = d.person()
    things = d.pick(("notebooks", "pens", "apples", "comics", "candles", "mugs"))
    count, price = d.int(2, 8), d.int(2, 9)
    bill = d.pick([b for b in (20, 50, 100) if b > count * price])
    text = (
        f"{p.name} buys {count} {things} at ${price} each and pays with a ${bill} bill. "
        f"How much change does {p.he} get, in dollars?"
    )
    return text, f"{bill}-{count}*{price}", bill - count * price


@template(T2)
def packs(d: Draw):
    p = d.person()
    things = d.pick(("stickers", "cards", "balloons", "beads"))
    have, count, per = d.int(3, 50), d.int(2, 9), d.int(4, 12)
    text = (
        f"{p.name} has {have} {things}. {cap(p.he)} buys {count} packs with {per} {things} "
        f"in each pack. How many {things} does {p.he} have now?"
    )
    return text, f"{have}+{count}*{per}", have + count * per


@template(T2)
def bags(d: Draw):
    p = d.person()
    bag, filled = d.int(4, 12), d.int(4, 15)
    total = bag * filled
    morning = d.int(2, total - 2)
    treats = d.pick(("cookies", "muffins", "rolls", "pretzels"))
    text = (
        f"{p.name} baked {morning} {treats} in the morning and {total - morning} {treats} "
        f"in the afternoon. {cap(p.he)} puts all of them into bags of {bag}. "
        f"How many bags does {p.he} fill?"
    )
    return text, f"({morning}+{total - morning})/{bag}", filled


@template(T2)
def weeks(d: Draw):
    p = d.person()
    daily, count = d.int(2, 12), d.int(2, 8)
    verb, unit = d.pick((("runs", "kilometres"), ("reads", "pages"), ("swims", "lengths")))
    amount = f"{daily} km" if unit == "kilometres" else f"{daily} {unit}"
    text = (
        f"{p.name} {verb} {amount} every day. How many {unit} does {p.he} {verb[:-1]} in "
        f"{count} weeks?"
    )
    return text, f"{daily}*7*{count}", daily * 7 * count


@template(T2)
def given_out(d: Draw):
    place = d.pick(("school", "club", "summer camp"))
    count, per = d.int(3, 12), d.int(6, 24)
    gone = d.int(5, count * per - 5)
    things = d.pick(("pencils", "erasers", "markers", "rulers"))
    text = (
        f"A {place} orders {count} boxes of {things} with {per} {things} in each box. "
        f"It gives out {gone} {things}. How many {things} are left?"
    )
    return text, f"{count}*{per}-{gone}", count * per - gone


@template(T2)
def saving(d: Draw):
    p = d.person()
    weekly, weeks_needed, has = d.int(5, 25), d.int(2, 12), d.int(10, 80)
    price = has + weekly * weeks_needed
    thing = d.pick(("bike", "guitar", "tablet", "skateboard", "telescope"))
    text = (
        f"{p.name} wants a {thing} that costs ${price}. {cap(p.he)} already has ${has} and "
        f"saves ${weekly} each week. How many weeks will it take {p.him} to have enough "
        f"money?"
    )
    return text, f"({price}-{has})/{weekly}", weeks_needed


@template(T2)
def family(d: Draw):
    place = d.pick(("museum", "zoo", "cinema", "water park"))
    adult, child, adults = d.int(8, 30), d.int(3, 12), d.int(2, 4)
    text = (
        f"A {place} ticket costs ${adult} for an adult and ${child} for a child. How many "
        f"dollars does a family of {adults} adults and one child pay?"
    )
    return text, f"{adults}*{adult}+{child}", adults * adult + child


@template(T2)
def train(d: Draw):
    speed, hours, more = d.int(40, 120, 5), d.int(2, 6), d.int(10, 90)
    vehicle = d.pick(("train", "bus", "truck"))
    text = (
        f"A {vehicle} travels at {speed} km per hour for {hours} hours. Then it travels "
        f"{more} more km. How many kilometres does it travel in total?"
    )
    return text, f"{speed}*{hours}+{more}", speed * hours + more


@template(T2)
def gave_away(d: Draw):
    a, b, c = d.people(3)
    had = d.int(20, 120)
    first = d.int(2, had // 3)
    second = d.int(2, had // 3)
    things = d.pick(("marbles", "stickers", "cherries", "stamps"))
    text = (
        f"{a.name} had {had} {things}. {cap(a.he)} gave {first} to {b.name} and {second} to "
        f"{c.name}. How many {things} does {a.name} have left?"
    )
    return text, f"{had}-{first}-{second}", had - first - second


@template(T2)
def garden(d: Draw):
    r, per = d.int(3, 12), d.int(5, 15)
    lost = d.int(2, r * per - 2)
    plant, pest = d.pick(
        (("lettuce", "Rabbits ate"), ("tomato", "A storm broke"), ("cabbage", "Slugs ate"))
    )
    text = (
        f"A garden has {r} rows of {plant} plants with {per} plants in each row. {pest} "
        f"{lost} of the plants. How many plants are left?"
    )
    return text, f"{r}*{per}-{lost}", r * per - lost


@template(T2)
def pizza(d: Draw):
    p = d.person()
    while True:  # until the slices share out evenly
        slices, people, each = d.pick((6, 8, 10, 12)), d.int(3, 12), d.int(2, 5)
        if people * each % slices == 0:
            break
    pizzas = people * each // slices
    text = (
        f"Each pizza is cut into {slices} slices. {p.name} orders {pizzas} pizzas for "
        f"{people} people, and they share the slices equally. How many slices does each "
        f"person get?"
    )
    return text, f"{pizzas}*{slices}/{people}", each


@template(T2)
def mother(d: Draw):
    p = d.person()
    age, times, later = d.int(6, 12), d.pick((3, 4)), d.int(2, 15)
    relative = d.pick(("mother", "father", "aunt", "uncle"))
    text = (
        f"{p.name} is {age} years old. {cap(p.his)} {relative} is {times} times as old as "
        f"{p.him}. How old will {p.his} {relative} be in {later} years?"
    )
    return text, f"{age}*{times}+{later}", age * times + later


@template(T2)
def tank(d: Draw):
    rate, minutes, now = d.int(3, 20), d.int(4, 30), d.int(10, 200)
    full = now + rate * minutes
    text = (
        f"A tank holds {full} litres of water when it is full. It now has {now} litres in "
        f"it. A hose adds {rate} litres every minute. How many minutes will it take to fill "
        f"the tank?"
    )
    return text, f"({full}-{now})/{rate}", minutes


@template(T2)
def instalments(d: Draw):
    p = d.person()
    monthly, months, now = d.int(10, 80, 5), d.pick((3, 4, 5, 6, 10, 12)), d.int(20, 200, 10)
    price = now + monthly * months
    thing = d.pick(("phone", "laptop", "sofa", "bicycle"))
    text = (
        f"A {thing} costs ${price}. {p.name} pays ${now} now and the rest in {months} "
        f"equal monthly payments. How many dollars is each monthly payment?"
    )
    return text, f"({price}-{now})/{months}", monthly


@template(T2)
def two_games(d: Draw):
    a, b = d.people(2)
    first, second = d.int(10, 60), d.int(10, 60)
    other = d.int(10, first + second - 2)
    text = (
        f"{a.name} scored {first} points in the first game and {second} points in the "
        f"second game. {b.name} scored {other} points in the two games together. How many "
        f"more points did {a.name} score than {b.name}?"
    )
    return text, f"{first}+{second}-{other}", first + second - other


@template(T2)
def half_walk(d: Draw):
    students = d.int(20, 40, 2)
    bus_riders = d.int(2, students // 2 - 1)
    text = (
        f"There are {students} students in a class. Half of them walk to school. Of the "
        f"others, {bus_riders} come by bus and the rest come by bike. How many students come "
        f"by bike?"
    )
    return text, f"{students}/2-{bus_riders}", students // 2 - bus_riders


@template(T2)
def weekend_sales(d: Draw):
    price, sat, sun = d.int(2, 6), d.int(20, 90), d.int(20, 90)
    treat = d.pick(("muffins", "bagels", "croissants", "pies"))
    text = (
        f"A bakery sells {treat} for ${price} each. It sold {sat} {treat} on Saturday and "
        f"{sun} {treat} on Sunday. How many dollars did it make from {treat}?"
    )
    return text, f"({sat}+{sun})*{price}", (sat + sun) * price


@template(T2)
def dozen_eggs(d: Draw):
    p = d.person()
    dozens, broken = d.int(2, 8), d.int(2, 10)
    text = (
        f"{p.name} buys {dozens} dozen eggs. At home {p.he} finds that {broken} of the eggs "
        f"are broken. How many eggs are not broken?"
    )
    return text, f"{dozens}*12-{broken}", dozens * 12 - broken


@template(T2)
def shifts(d: Draw):
    p = d.person()
    hours, days, wage = d.int(3, 8), d.int(2, 6), d.int(8, 20)
    text = (
        f"{p.name} works {hours} hours a day for {days} days. {cap(p.he)} is paid ${wage} per "
        f"hour. How many dollars does {p.he} earn?"
    )
    return text, f"{hours}*{days}*{wage}", hours * days * wage


@template(T2)
def picked(d: Draw):
    p = d.person()
    friends, each, ate = d.int(2, 6), d.int(3, 10), d.int(2, 6)
    picked_count = friends * each + ate
    fruit = d.pick(("apples", "plums", "strawberries", "figs"))
    text = (
        f"{p.name} picked {picked_count} {fruit} and ate {ate} of them. {cap(p.he)} shared "
        f"the rest equally among {friends} friends. How many {fruit} did each friend get?"
    )
    return text, f"({picked_count}-{ate})/{friends}", each


# ---- tier 3: three to five steps, GSM8K-like --------------------------------------------------
T3 = "tier3_multi_step"


@template(T3)
def sale_change(d: Draw):
    p = d.person()
    while True:  # until the discount is whole dollars
        price, off = d.int(20, 200, 10), d.pick((10, 20, 25, 30, 40, 50))
        if price * off % 100 == 0:
            break
    paid = price - price * off // 100
    bill = d.pick([b for b in (50, 100, 200) if b > paid])
    thing = d.pick(("jacket", "pair of shoes", "backpack", "lamp", "board game"))
    text = (
        f"A {thing} costs ${price}. It is on sale for {off}% off. {p.name} buys it and pays "
        f"with a ${bill} bill. How much change does {p.he} get, in dollars?"
    )
    return text, f"{bill}-({price}-{price}*{off}/100)", bill - paid


@template(T3)
def sales_tax(d: Draw):
    p = d.person()
    while True:  # until the tax is whole dollars
        count, price, tax = d.int(2, 6), d.int(5, 40, 5), d.pick((5, 10, 20))
        if count * price * tax % 100 == 0:
            break
    things = d.pick(("books", "shirts", "plants", "puzzles"))
    total = count * price
    text = (
        f"{p.name} buys {count} {things} at ${price} each. Sales tax adds {tax}% to the "
        f"cost. How many dollars does {p.he} pay in all?"
    )
    return text, f"{count}*{price}+{count}*{price}*{tax}/100", total + total * tax // 100


@template(T3)
def percent_more(d: Draw):
    while True:  # until the increase and the bags come out whole
        last, more, bag = d.int(100, 900, 20), d.pick((10, 20, 25, 50)), d.pick((5, 10, 20, 25))
        this_year = last + last * more // 100
        if last * more % 100 == 0 and this_year % bag == 0:
            break
    crop = d.pick(("apples", "potatoes", "carrots", "onions"))
    text = (
        f"Last year a farm grew {last} kg of {crop}. This year it grew {more}% more. The "
        f"{crop} are packed in bags of {bag} kg. How many bags does the farm fill this "
        f"year?"
    )
    return text, f"({last}+{last}*{more}/100)/{bag}", this_year // bag


@template(T3)
def fraction_club(d: Draw):
    words, num, den = d.pick(FRACTIONS)
    members = den * d.int(4, 15)
    players = members * num // den
    both = d.int(2, players - 1)
    club, first, second = d.pick(
        (
            ("club", "chess", "cards"),
            ("class", "football", "tennis"),
            ("choir", "the piano", "the guitar"),
        )
    )
    players_of = f"{first.removeprefix('the ')} players"
    text = (
        f"A {club} has {members} members. {cap(words)} of them play {first}. Of the "
        f"{players_of}, {both} also play {second}. How many {players_of} do not play "
        f"{second}?"
    )
    return text, f"{members}*{num}/{den}-{both}", players - both


@template(T3)
def two_speeds(d: Draw):
    p = d.person()
    while True:  # until the distance in the minutes is whole
        fast, minutes = d.int(30, 90, 6), d.pick((15, 20, 30, 40, 45))
        if fast * minutes % 60 == 0:
            break
    slow, hours = d.int(20, 60, 5), d.int(2, 4)
    text = (
        f"{p.name} drives at {fast} km per hour for {minutes} minutes, then at {slow} km per "
        f"hour for {hours} hours. How many kilometres does {p.he} drive in total?"
    )
    return (text, f"{fast}*{minutes}/60+{slow}*{hours}", fast * minutes // 60 + slow * hours)


@template(T3)
def trucks(d: Draw):
    p = d.person()
    while True:  # until the boxes fill whole trucks
        rate, hours, days, load = d.int(10, 40), d.int(4, 8), d.int(2, 6), d.pick((20, 40, 50, 60))
        if rate * hours * days % load == 0:
            break
    text = (
        f"{p.name} packs {rate} boxes an hour. {cap(p.he)} works {hours} hours a day for "
        f"{days} days. A truck takes {load} boxes. How many trucks can be filled with the "
        f"boxes?"
    )
    return text, f"{rate}*{hours}*{days}/{load}", rate * hours * days // load


@template(T3)
def cheaper_shop(d: Draw):
    p = d.person()
    cheap, dear = d.int(1, 4), d.int(2, 6)
    dear = max(dear, cheap + 1)
    pack_a, pack_b = d.pick(((3, 5), (4, 6), (5, 10), (2, 6), (6, 4), (10, 4)))
    need = d.int(10, 40)
    things = d.pick(("pens", "candles", "soaps", "notebooks"))
    text = (
        f"At one shop, {pack_a} {things} cost ${dear * pack_a}. At another shop, {pack_b} "
        f"{things} cost ${cheap * pack_b}. {p.name} needs {need} {things}. How many dollars "
        f"does {p.he} save by buying them at the cheaper shop?"
    )
    check = f"{need}*{dear * pack_a}/{pack_a}-{need}*{cheap * pack_b}/{pack_b}"
    return text, check, need * (dear - cheap)


@template(T3)
def stamps(d: Draw):
    a, b, c = d.people(3)
    first, times = d.int(5, 40), d.pick(tuple(TIMES))
    fewer = d.int(2, first * times - 1)
    things = d.pick(("stamps", "comics", "shells", "coins"))
    text = (
        f"{a.name} has {first} {things}. {b.name} has {TIMES[times]} as many {things} as "
        f"{a.name}. {c.name} has {fewer} fewer {things} than {b.name}. How many {things} do "
        f"the three of them have altogether?"
    )
    check = f"{first}+{first}*{times}+({first}*{times}-{fewer})"
    return text, check, first + first * times + first * times - fewer


@template(T3)
def practice(d: Draw):
    p = d.person()
    while True:  # until the minutes make whole hours
        minutes, count = d.pick((15, 20, 30, 40, 45)), d.int(2, 12)
        if minutes * 7 * count % 60 == 0:
            break
    activity = d.pick(("practises the piano", "plays chess", "studies Spanish", "goes jogging"))
    text = (
        f"{p.name} {activity} for {minutes} minutes every day. How many hours does {p.he} "
        f"spend on it in {count} weeks?"
    )
    return text, f"{minutes}*7*{count}/60", minutes * 7 * count // 60


@template(T3)
def ribbon(d: Draw):
    p = d.person()
    metres, piece, gifts = d.int(3, 10), d.pick((15, 20, 25, 30, 40)), d.int(3, 12)
    if piece * gifts >= metres * 100:
        gifts = metres * 100 // piece // 2
    text = (
        f"A roll of ribbon is {metres} metres long. {p.name} cuts {gifts} pieces of {piece} "
        f"cm each from it. How many centimetres of ribbon are left on the roll?"
    )
    return text, f"{metres}*100-{piece}*{gifts}", metres * 100 - piece * gifts


@template(T3)
def rolls(d: Draw):
    p = d.person()
    dozens = d.int(3, 10)
    sold_morning = d.int(4, dozens * 12 - 4, 2)  # even: the rest halves evenly
    text = (
        f"{p.name} bakes {dozens} dozen bread rolls. {cap(p.he)} sells {sold_morning} rolls in "
        f"the morning and half of the remaining rolls in the afternoon. How many rolls are "
        f"left at the end of the day?"
    )
    return text, f"({dozens}*12-{sold_morning})/2", (dozens * 12 - sold_morning) // 2


@template(T3)
def groceries(d: Draw):
    p = d.person()
    (one, one_price), (two, two_price) = d.pick(
        (
            (("apples", 1), ("loaves of bread", 3)),
            (("bananas", 1), ("cartons of milk", 2)),
            (("pears", 2), ("jars of honey", 6)),
            (("lemons", 1), ("bags of rice", 4)),
        )
    )
    x, y = d.int(2, 8), d.int(2, 5)
    cost = x * one_price + y * two_price
    bill = d.pick([b for b in (20, 50) if b > cost])
    text = (
        f"{p.name} buys {x} {one} at ${one_price} each and {y} {two} at ${two_price} each. "
        f"{cap(p.he)} pays with a ${bill} bill. How much change does {p.he} get, in "
        f"dollars?"
    )
    return text, f"{bill}-({x}*{one_price}+{y}*{two_price})", bill - cost


@template(T3)
def pipes(d: Draw):
    first, second, minutes, already = d.int(2, 9), d.int(2, 9), d.int(5, 30), d.int(10, 150)
    holds = already + (first + second) * minutes
    text = (
        f"One pipe pours {first} litres of water per minute into a tank and a second pipe "
        f"pours {second} litres per minute. The tank holds {holds} litres and already has "
        f"{already} litres in it. How many minutes does it take both pipes together to fill "
        f"the tank?"
    )
    return text, f"({holds}-{already})/({first}+{second})", minutes


@template(T3)
def trip_buses(d: Draw):
    while True:  # until the going students fill whole buses
        students, share, seats = (
            d.int(200, 900, 20),
            d.pick((10, 20, 25, 40, 50)),
            d.pick((20, 25, 30, 40)),
        )
        going = students * share // 100
        if students * share % 100 == 0 and going % seats == 0:
            break
    text = (
        f"A school has {students} students, and {share}% of them go on a trip. Each bus carries "
        f"{seats} students, and every bus is full. How many buses are used?"
    )
    return text, f"{students}*{share}/100/{seats}", going // seats


@template(T3)
def overtime(d: Draw):
    p = d.person()
    wage, base = d.int(10, 20), d.pick((35, 38, 40))
    extra_wage, worked = wage + d.int(3, 10), base + d.int(2, 9)
    text = (
        f"{p.name} earns ${wage} an hour for the first {base} hours {p.he} works each week and "
        f"${extra_wage} an hour for every hour after that. Last week {p.he} worked {worked} "
        f"hours. How many dollars did {p.he} earn last week?"
    )
    check = f"{wage}*{base}+{extra_wage}*({worked}-{base})"
    return text, check, wage * base + extra_wage * (worked - base)


@template(T3)
def recipe(d: Draw):
    p = d.person()
    serves, per_person = d.pick((2, 4, 5, 6)), d.pick((50, 60, 75, 100))
    guests = serves * d.int(2, 4)
    flour = serves * per_person
    used = flour * guests // serves
    bag = d.pick([b for b in (1000, 1500, 2000, 2500) if b > used])
    text = (
        f"A recipe for {serves} people uses {flour} grams of flour. {p.name} makes the recipe "
        f"for {guests} people from a bag that holds {bag} grams of flour. How many grams of "
        f"flour are left in the bag?"
    )
    return text, f"{bag}-{flour}*{guests}/{serves}", bag - used


@template(T3)
def save_for_game(d: Draw):
    p = d.person()
    allowance, spent, weeks_needed, has = d.int(8, 20), d.int(2, 6), d.int(3, 10), d.int(5, 30)
    goal = has + (allowance - spent) * weeks_needed
    text = (
        f"{p.name} gets ${allowance} of pocket money every week. {cap(p.he)} spends ${spent} "
        f"of it each week and saves the rest. {cap(p.he)} already has ${has}. How many weeks "
        f"will it take {p.him} to have ${goal} for a video game?"
    )
    return text, f"({goal}-{has})/({allowance}-{spent})", weeks_needed


@template(T3)
def average(d: Draw):
    p = d.person()
    while True:  # until the mean is whole
        a, b, c = d.int(50, 100), d.int(50, 100), d.int(50, 100)
        if (a + b + c) % 3 == 0:
            break
    text = (
        f"{p.name} scored {a}, {b} and {c} points on three tests. What was {p.his} average score?"
    )
    return text, f"({a}+{b}+{c})/3", (a + b + c) // 3


@template(T3)
def cycling(d: Draw):
    p = d.person()
    while True:  # until one trip is whole kilometres
        speed, minutes = d.int(10, 24), d.pick((10, 15, 20, 30))
        if speed * minutes % 60 == 0:
            break
    days = d.int(3, 20)
    text = (
        f"{p.name} cycles to school at {speed} km per hour, and the trip takes {minutes} "
        f"minutes. {cap(p.he)} makes the trip twice every school day, there and back. How "
        f"many kilometres does {p.he} cycle in {days} school days?"
    )
    return text, f"{speed}*{minutes}/60*2*{days}", speed * minutes // 60 * 2 * days


@template(T3)
def spent_part(d: Draw):
    p = d.person()
    words, num, den = d.pick(UNIT_FRACTIONS + FRACTIONS[:2])
    had = den * d.int(4, 20)
    part = had * num // den
    lunch = d.int(2, had - part - 1)
    thing = d.pick(("a book", "a jacket", "a present", "a concert ticket"))
    text = (
        f"{p.name} had ${had}. {cap(p.he)} spent {words} of it on {thing} and ${lunch} on "
        f"lunch. How many dollars does {p.he} have left?"
    )
    part_check = f"{had}/{den}" if num == 1 else f"{had}*{num}/{den}"
    return text, f"{had}-{part_check}-{lunch}", had - part - lunch


@template(T3)
def apples_kg(d: Draw):
    kilos, grams, boxes_count = d.int(2, 10), d.pick((100, 125, 200, 250)), d.int(2, 9)
    fruit = d.pick(("apples", "oranges", "pears"))
    text = (
        f"A box of {fruit} weighs {kilos} kg, and each of the {fruit} weighs {grams} grams. "
        f"How many {fruit} are there in {boxes_count} boxes?"
    )
    return text, f"{kilos}*1000/{grams}*{boxes_count}", kilos * 1000 // grams * boxes_count


@template(T3)
def legs(d: Draw):
    cows, hens, sold_hens = d.int(3, 30), d.int(6, 40), d.int(2, 5)
    text = (
        f"A farmer has {cows} cows and {hens} chickens. Each cow has 4 legs and each chicken "
        f"has 2 legs. The farmer sells {sold_hens} of the chickens. How many legs do the "
        f"animals left on the farm have altogether?"
    )
    return text, f"{cows}*4+({hens}-{sold_hens})*2", cows * 4 + (hens - sold_hens) * 2


@template(T3)
def festival(d: Draw):
    while True:  # until the minutes make whole hours
        films, length, pause = (
            d.int(3, 8),
            d.pick((80, 90, 100, 110, 120)),
            d.pick((10, 15, 20, 30)),
        )
        if films * (length + pause) % 60 == 0:
            break
    text = (
        f"A film festival shows {films} films that are each {length} minutes long. There is "
        f"a {pause}-minute break after every film. How many hours does the festival last, "
        f"breaks included?"
    )
    return text, f"({films}*{length}+{films}*{pause})/60", films * (length + pause) // 60


# ---- tier 4: two or three steps over large numbers --------------------------------------------
T4 = "tier4_large_numbers"


@template(T4)
def factory(d: Draw):
    daily, days = d.int(1200, 9800, 25), d.int(12, 60)
    shipped = d.int(1000, daily * days - 1000, 10)
    thing = d.pick(("bottles", "bricks", "toy cars", "cans"))
    text = (
        f"A factory makes {daily} {thing} every day. After {days} days, it has shipped "
        f"{shipped} {thing}. How many {thing} has it not shipped yet?"
    )
    return text, f"{daily}*{days}-{shipped}", daily * days - shipped


@template(T4)
def stadium(d: Draw):
    sections, seats = d.int(104, 260), d.int(110, 390)
    sold_tickets = d.int(10000, sections * seats - 100)
    text = (
        f"A stadium has {sections} sections with {seats} seats in each section. For a "
        f"match, {sold_tickets} tickets were sold. How many seats were empty?"
    )
    return text, f"{sections}*{seats}-{sold_tickets}", sections * seats - sold_tickets


@template(T4)
def payroll(d: Draw):
    workers, monthly = d.int(120, 950), d.int(1800, 6400, 50)
    text = (
        f"A company has {workers} workers, and each of them earns ${monthly} a month. How "
        f"many dollars does the company pay its workers in a year?"
    )
    return text, f"{workers}*{monthly}*12", workers * monthly * 12


@template(T4)
def city(d: Draw):
    people, moved_in, moved_out = d.int(120000, 980000), d.int(1500, 40000), d.int(1500, 40000)
    place = d.pick(("city", "town", "region"))
    text = (
        f"A {place} had {people} people at the start of the year. During the year {moved_in} "
        f"people moved in and {moved_out} people moved away. How many people lived in the "
        f"{place} at the end of the year?"
    )
    return text, f"{people}+{moved_in}-{moved_out}", people + moved_in - moved_out


@template(T4)
def shop_profit(d: Draw):
    count, price = d.int(120, 900), d.int(105, 850)
    costs = d.int(5000, count * price - 1000, 100)
    thing = d.pick(("phones", "bicycles", "watches", "printers"))
    text = (
        f"A shop sold {count} {thing} at ${price} each. It spent ${costs} on rent and wages. "
        f"How many dollars were left after paying these costs?"
    )
    return text, f"{count}*{price}-{costs}", count * price - costs


@template(T4)
def library_boxes(d: Draw):
    books, count, per = d.int(12000, 95000), d.int(15, 240), d.int(24, 180)
    text = (
        f"A library has {books} books. It buys {count} boxes of new books with {per} books in "
        f"each box. How many books does the library have now?"
    )
    return text, f"{books}+{count}*{per}", books + count * per


@template(T4)
def sand_trips(d: Draw):
    load, trips, fee = d.int(1200, 9500, 50), d.int(12, 95), d.int(85, 480)
    needed = load * trips
    text = (
        f"A truck carries {load} kg of sand on each trip. A builder needs {needed} kg of sand, "
        f"and each trip costs ${fee}. How many dollars do the trips cost?"
    )
    return text, f"{needed}/{load}*{fee}", trips * fee


@template(T4)
def flights(d: Draw):
    daily, days, last = d.int(1200, 9800), d.int(14, 95), d.int(1100, 8800)
    text = (
        f"A plane flies {daily} km every day for {days} days. On the next day it makes one "
        f"more flight of {last} km. How many kilometres does it fly in all?"
    )
    return text, f"{daily}*{days}+{last}", daily * days + last


@template(T4)
def savings_split(d: Draw):
    p = d.person()
    accounts, each, car = d.int(3, 9), d.int(2500, 19000, 50), d.int(8000, 45000, 100)
    total = car + accounts * each
    text = (
        f"{p.name} has ${total} in savings. {cap(p.he)} spends ${car} on a car and splits the "
        f"rest equally among {accounts} bank accounts. How many dollars go into each "
        f"account?"
    )
    return text, f"({total}-{car})/{accounts}", each


@template(T4)
def rice(d: Draw):
    bag = d.pick((25, 40, 50))
    per_field, fields = bag * d.int(48, 200), d.int(6, 48)
    text = (
        f"A farm harvests {per_field} kg of rice from each of its {fields} fields. The rice is "
        f"sold in {bag} kg bags. How many bags does the farm fill?"
    )
    return text, f"{per_field}*{fields}/{bag}", per_field * fields // bag


@template(T4)
def concert(d: Draw):
    cheap, dear = d.int(1200, 9800), d.int(1100, 6500)
    cheap_price, dear_price = d.int(25, 90), d.int(95, 240)
    text = (
        f"A concert sold {cheap} tickets at ${cheap_price} each and {dear} tickets at "
        f"${dear_price} each. How many dollars did the tickets bring in?"
    )
    return (
        text,
        f"{cheap}*{cheap_price}+{dear}*{dear_price}",
        cheap * cheap_price + dear * dear_price,
    )


@template(T4)
def district(d: Draw):
    schools, per = d.int(12, 85), d.int(320, 1450)
    left = d.int(1000, schools * per // 3)
    text = (
        f"A school district has {schools} schools with {per} students in each school. This "
        f"year {left} students finished school and left. How many students are still in the "
        f"district's schools?"
    )
    return text, f"{schools}*{per}-{left}", schools * per - left


@template(T4)
def visitors(d: Draw):
    saturday = d.int(12000, 95000)
    fewer = d.int(1000, saturday // 2)
    place = d.pick(("museum", "theme park", "zoo", "science fair"))
    text = (
        f"A {place} had {saturday} visitors on Saturday. On Sunday it had {fewer} fewer "
        f"visitors than on Saturday. How many visitors did it have on the two days "
        f"together?"
    )
    return text, f"{saturday}+({saturday}-{fewer})", saturday + saturday - fewer


@template(T4)
def tree_farm(d: Draw):
    rows_count, per = d.int(105, 480), d.int(112, 390)
    cut = d.int(1000, rows_count * per // 2)
    text = (
        f"A tree farm has {rows_count} rows with {per} young trees in each row. This winter "
        f"{cut} trees were sold. How many trees are left on the farm?"
    )
    return text, f"{rows_count}*{per}-{cut}", rows_count * per - cut


@template(T4)
def months(d: Draw):
    p = d.person()
    a, b, c = d.int(1800, 9900), d.int(1800, 9900), d.int(1800, 9900)
    text = (
        f"{p.name} drives a truck. {cap(p.he)} drove {a} km in March, {b} km in April and "
        f"{c} km in May. How many kilometres did {p.he} drive in the three months?"
    )
    return text, f"{a}+{b}+{c}", a + b + c


@template(T4)
def reservoir(d: Draw):
    daily, days = d.int(1200, 9000, 10), d.int(12, 90)
    full = daily * days + d.int(1000, 90000)
    text = (
        f"A reservoir holds {full} litres of water. A town uses {daily} litres from it each "
        f"day. How many litres are left after {days} days?"
    )
    return text, f"{full}-{daily}*{days}", full - daily * days


@template(T4)
def paper_mill(d: Draw):
    boxes_a_day, sheets, days = d.int(120, 850), d.int(250, 500, 250), d.int(6, 30)
    text = (
        f"A paper mill makes {boxes_a_day} boxes of paper each day, with {sheets} sheets in "
        f"each box. How many sheets of paper does it make in {days} days?"
    )
    return text, f"{boxes_a_day}*{sheets}*{days}", boxes_a_day * sheets * days


# ---- generating and checking ------------------------------------------------------------------
_LARGE_RE = re.compile(r"(?<![\d,.])\d{4,}")


def with_thousands(text: str) -> str:
    """Numbers of four digits or more written with thousands separators (12500 -> 12,500)."""
    return _LARGE_RE.sub(lambda m: f"{int(m.group()):,}", text)


def generate(tier: str) -> list[dict]:
    """The tier's COUNT problems, templates taking turns; ids count from 1 in file order."""
    rng = random.Random(f"{SEED}:{tier}")
    draw = Draw(rng)
    templates, seen, records = TEMPLATES[tier], set(), []
    prefix = tier.split("_")[0]
    for index in range(COUNT):
        fn = templates[index % len(templates)]
        for _ in range(MAX_DRAWS):
            text, check, answer = fn(draw)
            text = with_thousands(text)
            if text not in seen:
                break
        else:
            raise RuntimeError(f"{tier}: {fn.__name__} repeats itself after {MAX_DRAWS} draws")
        if not (isinstance(answer, int) and answer > 0):
            raise RuntimeError(f"{tier}: {fn.__name__} gave {answer!r} for {text!r}")
        seen.add(text)
        records.append(
            {
                "id": f"{prefix}-{index + 1:03d}",
                "tier": tier,
                "problem": text,
                "answer": str(answer),
                "check": check,
                "template": fn.__name__,
            }
        )
    return records


def render(records: list[dict]) -> str:
    """JSONL text: one object per line, sorted keys, "\\n" line ends."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate in memory; exit 1 if a committed file differs",
    )
    args = parser.parse_args(argv)
    stale = []
    for tier in GENERATED:
        text, path = render(generate(tier)), TIERS[tier]
        if args.check:
            if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
                stale.append(path)
        else:
            path.write_bytes(text.encode("utf-8"))
            print(f"wrote {shown(path)} ({COUNT} problems)")
    for path in stale:
        print(f"{shown(path)} differs from the generator's output", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
