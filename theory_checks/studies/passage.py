"""A natural-language passage for the real-model study's prompts (S1).

Original prose written for this project (no copyrighted or downloaded text): about 1,900
words, some 2,300 tokens in SmolLM2's tokenizer, so a prompt of n = 2048 tokens is cut from
it without repeating; longer prompts repeat it (the study says so where it happens).
"""

PASSAGE = """\
The lighthouse on the northern headland was built in the spring of a wet year, when the \
harbour town still depended on fishing boats that left before dawn and came back, if the \
weather allowed, before the evening meal. For generations the people of the town had \
guided their boats home by a fire kept burning on the cliff, a heap of driftwood and tar \
that the youngest sons were sent to tend. The fire was never bright enough on a night of \
rain, and everyone could name a family that had lost a father or a brother on the rocks \
below the point. So when a merchant who had grown rich in the grain trade offered to pay \
for a proper tower of stone, the town council accepted before he could change his mind.

The builders came from the south with their own tools and their own habits. They worked \
from first light until the wind rose in the afternoon, and they argued in the evenings \
about the thickness of the walls. The master mason wanted the base to be wide and heavy, \
so that the tower would sit on the rock like a bell on a table; his younger partner \
wanted it slender, so that it would cost less and rise faster. In the end the older man \
won, and the tower that still stands today is broader at its foot than anyone expects. \
Visitors who climb the hundred and twelve steps to the lantern room often say that the \
stairs seem to go on for longer than the tower is tall, which is an illusion of the \
curving wall and the small windows that open only onto the sea.

The first keeper was a widower named Tobias, who had been a sailor until a fall from the \
rigging left him with a stiff leg. He moved into the small house at the foot of the tower \
with his daughter, who was eleven years old and already better at arithmetic than the \
schoolmaster. Each evening Tobias climbed the stairs with a can of oil, trimmed the wicks, \
polished the reflectors, and wound the clockwork that turned the great lens. Each morning \
he wrote in a ledger the time the light was lit, the time it was put out, the state of \
the sea, the direction of the wind, and the ships that had passed. The ledgers survive in \
the town museum, a long row of brown volumes whose handwriting changes halfway through, \
when the daughter began to keep them for her father.

Reading the ledgers is a strange experience. Most entries are short and almost identical: \
light lit at dusk, wind from the west, sea moderate, two colliers and a fishing smack \
passed, light extinguished at sunrise. Page after page repeats the same few words, and a \
reader who turns them quickly begins to feel that nothing ever happened at the point. But \
among the ordinary entries there are others that stop the eye. One records a storm in \
which the keeper kept the light burning for three nights without sleep, because the \
clockwork had frozen and he had to turn the lens by hand. Another notes, in a single \
line, that a boat had been seen in distress near the outer rocks and that the keeper's \
daughter had rowed out with a neighbour and brought back four men. There is no \
description of the rescue, only the names of the men and the words all safe.

In later years the lighthouse became a small institution of its own. The government took \
it over from the town and sent inspectors who arrived without warning, ran their fingers \
along the brass, and counted the gallons of oil in the store. The inspectors wrote reports \
that praised the cleanliness of the lantern and complained about the state of the garden. \
A second keeper was added, and then a third, so that the watch could be divided into \
shifts and no one had to stay awake for a whole night. The keepers and their families \
formed a tiny village on the headland, with a vegetable plot, a cow, a row of washing \
lines, and a schoolroom where the children of the keepers were taught by whichever adult \
had the most patience that winter.

The life was quiet but not idle. Besides the lamp there were the foghorn and its engine, \
the signal flags, the boat, the roof that leaked every autumn, and the endless paint that \
the salt wind stripped from every surface. The keepers learned to read the weather from \
the colour of the sky over the water and from the behaviour of the gulls. They learned \
which ships carried coal and which carried timber by the way they sat in the water. They \
learned the names of the fishing boats and the habits of their skippers, and they knew, \
long before the boats reached the harbour, which ones had found fish and which had not. \
In a sense the keepers were the memory of the coast: they saw everything that passed, \
wrote most of it down, and forgot very little.

When electricity reached the town, the lamp was converted, and the great lens was turned \
by a motor instead of by falling weights. The change was welcomed by the inspectors and \
regretted by the keepers, who said that the new light was harsher and that the hum of \
the motor kept them awake. A few years later the foghorn was replaced by an automatic \
signal that sounded whenever a sensor on the rocks detected mist. Each improvement made \
the work easier and the keepers fewer. By the time the last keeper retired, the light \
could be switched on and off from an office in a city two hundred miles away, and the \
houses on the headland stood empty, their windows boarded against the wind.

It would be easy to tell this story as a story of loss, and many people in the town do \
tell it that way. They remember the keepers as part of the landscape, like the cliffs and \
the church tower, and they speak of the automated light as if it were a stranger who had \
moved into a familiar house. But the fishermen who still work from the harbour tell it \
differently. For them the light has never been more reliable. It does not depend on the \
health of an old man or the skill of a child; it does not go out when the oil runs low \
or the clockwork freezes. The rocks below the point have not claimed a boat in forty \
years, and that, they say, is what a lighthouse is for.

The museum keeps a model of the tower in a glass case near the entrance. It was made by \
a retired engineer who spent three winters on it, and it is accurate down to the number \
of steps and the pattern of the iron railing around the gallery. Children press their \
faces against the glass and try to count the tiny windows. Beside the model is a map of \
the coast on which every wreck of the last three centuries is marked with a small black \
cross. The crosses are thick along the northern headland before the tower was built and \
almost absent afterwards, a plain picture of what the stone and the light achieved.

There is also a display about the light itself, which explains how a lens can gather the \
glow of a small flame and send it twenty miles out to sea. The explanation is simple \
enough for a child to follow. A bare flame shines in every direction, and most of its \
light is wasted on the sky and the ground. The lens is built from rings of glass, each \
shaped to bend the light that reaches it so that it leaves in the same direction as the \
light from every other ring. The result is a narrow, intense beam, and as the lens turns, \
the beam sweeps across the water like the spoke of a wheel. A sailor far away sees not a \
steady glow but a flash, repeated at an interval that belongs to this lighthouse alone, \
so that by counting the seconds between flashes he knows which headland he is looking at.

That idea, a signal that identifies its source by its rhythm, is older than the tower and \
will outlast it. Every light on the coast has its own pattern: one long flash every ten \
seconds, two short flashes every fifteen, a group of three followed by darkness. The \
patterns are printed in books that every navigator carries, and a careful sailor checks \
each light against the book before trusting it. In the days of the keepers, a light that \
showed the wrong pattern was a disaster, because a ship might mistake one headland for \
another and steer onto rocks it believed to be miles away. The keepers therefore guarded \
the rhythm of their light as carefully as its brightness, and the ledgers record with \
evident pride the years in which the clockwork never lost a second.

Today the tower is open to visitors on summer afternoons. A volunteer from the town sits \
at a table by the door, sells tickets, and answers questions about the keepers, the \
storms, and the famous rescue. The volunteer is often asked whether the tower is haunted, \
and the honest answer is that no one has ever seen a ghost there, although many people \
have heard the wind make strange sounds in the stairwell. Most visitors climb to the top, \
stand for a while on the gallery, and look out at the water, which is usually grey and \
restless and empty of ships. Some of them take photographs; others simply stand and \
watch the waves break on the rocks where so many boats were lost.

On clear evenings, if they stay late enough, they can watch the light come on. There is \
no ceremony and no keeper climbing the stairs with a can of oil; a switch closes somewhere \
far away, the motor begins to hum, and the beam starts its slow sweep across the darkening \
sea. The flash comes once every ten seconds, exactly as it did when Tobias first wound the \
clockwork, and the fishing boats coming home see it and know where they are. The people \
on the gallery usually fall silent at that moment. It is hard to say what they are \
thinking, but many of them, when they come down the stairs, stop at the table by the \
door and ask to see the ledgers.
"""
