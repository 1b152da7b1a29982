from e2urec.data.prompts import answer_for, build_prompt


def test_prompt_follows_the_paper_template_exactly():
    prompt = build_prompt("F", 25, "writer", [("Heat (1995)", 1), ("Up (2009)", 4.0)],
                          "Alien (1979)")
    assert prompt == (
        "The user is a female. Her job is writer. Her age is 25.\n"
        "She watched the following movies in order in the past, and rated them:\n"
        "['0. Heat (1995) (1 star)', '1. Up (2009) (4 stars)']\n"
        "Based on the movies she has watched, deduce if she will like the movie "
        "***Alien (1979)***.\n"
        "Note that more stars the user rated the movie, the user liked the movie more.\n"
        "You should ONLY tell me yes or no."
    )


def test_male_pronouns_and_label_threshold():
    prompt = build_prompt("M", 40, "lawyer", [], "X")
    assert prompt.startswith("The user is a male. His job is lawyer. His age is 40.\nHe watched")
    assert "deduce if he will like" in prompt
    assert (answer_for(4), answer_for(3), answer_for(3.5)) == ("Yes.", "No.", "Yes.")
